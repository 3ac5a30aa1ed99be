// Seed 000, Load Test (선착순 쿠폰 발급): ramp 5 -> 100 -> ... -> 600 -> 500 -> 0
// VUs over 46 s, a random user of 10 000 per iteration (so repeats meet
// already_issued). Seed figures: ~90 % success, http_req_duration avg
// 19.44 s, med 18.96 s, p90-p95 about 45 s. No seed threshold: we hold it to
// the peak test's p95 < 500 ms.
import { buildOptions, loadTokens, loadValue, randomItem } from './lib/common.js';
import { couponIteration, couponRequests } from './lib/coupon.js';

const coupon = loadValue('coupon', { id: 1, quantity: 1 });

export const options = buildOptions({
  shape: {
    executor: 'ramping-vus',
    startVUs: 0,
    stages: [
      { duration: '1s', target: 5 },
      { duration: '5s', target: 100 },
      { duration: '5s', target: 200 },
      { duration: '5s', target: 300 },
      { duration: '5s', target: 400 },
      { duration: '10s', target: 600 },
      { duration: '10s', target: 500 },
      { duration: '5s', target: 0 },
    ],
  },
  thresholds: {
    http_req_duration: ['p(95)<500'],
    issue_duration: ['p(95)<500'],
    http_req_failed: ['rate<0.01'],
    checks: ['rate>0.99'],
    coupon_issued: [`count<=${coupon.quantity}`],
  },
});

const tokens = loadTokens();

export default function () {
  couponIteration(couponRequests(randomItem(tokens), coupon.id));
}
