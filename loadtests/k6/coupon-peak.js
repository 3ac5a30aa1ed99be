// Seed 000, Peak Test (선착순 쿠폰 발급): 500 VUs at once, one iteration each:
// issue the coupon, sleep 1 s, read own coupons. Seed threshold: p95 < 500 ms.
// Seed figures: 89 % success before the fix (99 % after), http_req_duration
// avg 24.77 s, med 24.89 s, p90-p95 41-45 s, max 50 s (pessimistic locks).
// Our coupon has fewer units than VUs, so sold_out answers are expected;
// rule 1 (never more than the quantity) is also a threshold here.
import { buildOptions, loadTokens, loadValue } from './lib/common.js';
import { couponIteration, couponRequests } from './lib/coupon.js';

const coupon = loadValue('coupon', { id: 1, quantity: 1 });

export const options = buildOptions({
  shape: { executor: 'per-vu-iterations', vus: 500, iterations: 1, maxDuration: '2m' },
  thresholds: {
    http_req_duration: ['p(95)<500'],
    issue_duration: ['p(95)<500'],
    http_req_failed: ['rate<0.01'],
    checks: ['rate>0.99'],
    coupon_issued: [`count<=${coupon.quantity}`],
  },
});

const tokens = loadTokens();
// One distinct user per VU, like the seed's shuffled 500 of 10 000. Built in
// this VU's init context, before the burst (`__VU` is 0 while k6 only reads
// the options).
const requests = __VU > 0 ? couponRequests(tokens[(__VU - 1) % tokens.length], coupon.id) : null;

export default function () {
  couponIteration(requests);
}
