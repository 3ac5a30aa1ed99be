// Seed 003, scenario 1 (좌석 경합): 1 000 VUs at once, users paired so that
// both of a pair race for the same last unit (a product with stock 1).
// Exactly half win (the seed: 501 of 1 000 bookings, 499 refused by its
// concurrency control). Winners pay. Seed figures: 380 req/s,
// http_req_duration avg 2.09 s, med 1.76 s, p95 4.51 s; book avg 1.38 s,
// med 1.61 s, p95 2.01 s; checks 90 %.
import { Trend, Counter } from 'k6/metrics';
import {
  buildOptions, loadTokens, loadList, params, get, post, check, field, errorCode, idempotencyKey,
  scaleCount,
} from './lib/common.js';

const VUS = scaleCount(1000);
const WINNERS = Math.ceil(VUS / 2);
const LOSERS = Math.floor(VUS / 2);

export const options = buildOptions({
  shape: { executor: 'per-vu-iterations', vus: 1000, iterations: 1, maxDuration: '2m' },
  thresholds: {
    order_won: [`count==${WINNERS}`],
    order_lost: [`count==${LOSERS}`],
    order_duration: ['p(95)<2009.8'],
    http_req_failed: ['rate<0.01'],
    checks: ['rate>0.99'],
  },
});

const tokens = loadTokens();
const products = loadList('contention_products');
const productDuration = new Trend('product_duration', true);
const orderDuration = new Trend('order_duration', true);
const payDuration = new Trend('pay_duration', true);
const won = new Counter('order_won');
const lost = new Counter('order_lost');

export default function () {
  if (__ITER > 0) {
    return; // one race per VU, even when DURATION_SCALE asks for more
  }
  const user = tokens[(__VU - 1) % tokens.length];
  const productId = products[Math.floor((__VU - 1) / 2) % products.length];
  const detail = get(productDuration, `/api/v1/products/${productId}`, params({
    step: 'product', name: 'GET /api/v1/products/{id}',
  }));
  check(detail, { 'product detail': (r) => r.status === 200 });
  const order = post(orderDuration, '/api/v1/orders', { items: [{ product_id: productId, quantity: 1 }] }, params({
    token: user.token, step: 'order', name: 'POST /api/v1/orders', expect: [201, 409],
    headers: { 'Idempotency-Key': idempotencyKey() },
  }));
  check(order, {
    'order answered (201, or 409 out_of_stock)': (r) => r.status === 201
      || (r.status === 409 && errorCode(r) === 'out_of_stock'),
  });
  if (order.status !== 201) {
    lost.add(1);
    return;
  }
  won.add(1);
  const paid = post(payDuration, `/api/v1/orders/${field(order, 'id')}/payment`, null, params({
    token: user.token, step: 'pay', name: 'POST /api/v1/orders/{id}/payment',
    headers: { 'Idempotency-Key': idempotencyKey() },
  }));
  check(paid, { 'winner paid': (r) => r.status === 200 && field(r, 'status') === 'paid' });
}
