// Seed 000's coupon iteration: issue the coupon (first come), and when it was
// issued wait 1 s and read the caller's coupons; then 0.5 s think time.
// 201 issued, 409 sold_out and 409 already_issued are all correct answers.
import { Trend, Counter } from 'k6/metrics';
import { params, post, get, check, field, errorCode, think } from './common.js';

export const issueDuration = new Trend('issue_duration', true);
export const myCouponsDuration = new Trend('my_coupons_duration', true);
export const issued = new Counter('coupon_issued');
export const soldOut = new Counter('coupon_sold_out');
export const alreadyIssued = new Counter('coupon_already_issued');

export function couponIteration(user, couponId) {
  const res = post(issueDuration, `/api/v1/coupons/${couponId}/issue`, null, params({
    token: user.token, step: 'issue', name: 'POST /api/v1/coupons/{id}/issue', expect: [201, 409],
  }));
  const code = res.status === 409 ? errorCode(res) : '';
  check(res, {
    'issue answered (201, or 409 sold_out / already_issued)': (r) =>
      r.status === 201 || (r.status === 409 && (code === 'sold_out' || code === 'already_issued')),
  });
  if (res.status === 201) {
    issued.add(1);
    think(1);
    const mine = get(myCouponsDuration, '/api/v1/me/coupons', params({
      token: user.token, step: 'my_coupons', name: 'GET /api/v1/me/coupons',
    }));
    check(mine, {
      'my coupons list the issued coupon': (r) => r.status === 200
        && (field(r, 'items') || []).some((c) => c.coupon_id === couponId),
    });
  } else if (code === 'sold_out') {
    soldOut.add(1);
  } else if (code === 'already_issued') {
    alreadyIssued.add(1);
  }
  think(0.5);
}
