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

/**
 * One user's requests of the iteration (path, headers, tags, expected
 * statuses), built once. A VU that always plays the same user builds them in
 * the init context, so a burst's first request costs k6 no more script work
 * than the ceiling's.
 */
export function couponRequests(user, couponId) {
  return {
    couponId,
    issuePath: `/api/v1/coupons/${couponId}/issue`,
    issue: params({
      token: user.token, step: 'issue', name: 'POST /api/v1/coupons/{id}/issue', expect: [201, 409],
    }),
    mine: params({ token: user.token, step: 'my_coupons', name: 'GET /api/v1/me/coupons' }),
  };
}

// Built once: check() gets the answer's status and error code.
const answered = {
  'issue answered (201, or 409 sold_out / already_issued)': (a) =>
    a.status === 201 || (a.status === 409 && (a.code === 'sold_out' || a.code === 'already_issued')),
};

/** The iteration for the requests of `couponRequests`. */
export function couponIteration(req) {
  const res = post(issueDuration, req.issuePath, null, req.issue);
  const code = res.status === 409 ? errorCode(res) : '';
  check({ status: res.status, code }, answered);
  if (res.status === 201) {
    issued.add(1);
    think(1);
    const mine = get(myCouponsDuration, '/api/v1/me/coupons', req.mine);
    check(mine, {
      'my coupons list the issued coupon': (r) => r.status === 200
        && (field(r, 'items') || []).some((c) => c.coupon_id === req.couponId),
    });
  } else if (code === 'sold_out') {
    soldOut.add(1);
  } else if (code === 'already_issued') {
    alreadyIssued.add(1);
  }
  think(0.5);
}
