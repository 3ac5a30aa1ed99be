// Seed 004, 상품 주문 API: 100 VUs x 1 000 iterations of order creation, no
// think time (one unit of a random product; 10 000 products x 50 units).
// Seed figures (after logging fix and cache): 17 626 req/s, avg 5.47 ms,
// med 1.23 ms, p90 12.73 ms, p95 18.35 ms, max 426.74 ms, 0 % failed
// (before: 13 474 req/s, p95 24.26 ms).
import { Trend, Counter } from 'k6/metrics';
import {
  buildOptions, loadTokens, loadList, params, post, check, field, errorCode, idempotencyKey, randomItem,
} from './lib/common.js';

export const options = buildOptions({
  shape: { executor: 'per-vu-iterations', vus: 100, iterations: 1000, maxDuration: '10m' },
  thresholds: {
    order_duration: ['p(95)<18.35'],
    http_req_failed: ['rate<0.01'],
    checks: ['rate>0.99'],
  },
});

const tokens = loadTokens();
const products = loadList('products');
const orderDuration = new Trend('order_duration', true);
const outOfStock = new Counter('order_out_of_stock');

export default function () {
  const user = randomItem(tokens);
  const res = post(orderDuration, '/api/v1/orders', { items: [{ product_id: randomItem(products), quantity: 1 }] }, params({
    token: user.token, step: 'order', name: 'POST /api/v1/orders', expect: [201, 409],
    headers: { 'Idempotency-Key': idempotencyKey() },
  }));
  if (res.status === 409) {
    outOfStock.add(1);
  }
  check(res, {
    'order 201 pending (or 409 out_of_stock)': (r) => (r.status === 201 && field(r, 'status') === 'pending')
      || (r.status === 409 && errorCode(r) === 'out_of_stock'),
  });
}
