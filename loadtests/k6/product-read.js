// Seed 004, 상품조회 API: 100 VUs x 1 000 iterations of a product detail read,
// no think time. Seed figures (with cache): 17 506 req/s, avg 5.56 ms,
// med 2.69 ms, p90 12.64 ms, p95 18.42 ms, max 535.77 ms, 0 % failed
// (before the cache: 13 209 req/s, p95 24.87 ms).
import { Trend } from 'k6/metrics';
import { buildOptions, loadList, params, get, check, field, randomItem } from './lib/common.js';

export const options = buildOptions({
  shape: { executor: 'per-vu-iterations', vus: 100, iterations: 1000, maxDuration: '10m' },
  thresholds: {
    product_duration: ['p(95)<18.42'],
    http_req_failed: ['rate<0.01'],
    checks: ['rate>0.99'],
  },
});

const products = loadList('products');
const productDuration = new Trend('product_duration', true);

export default function () {
  const id = randomItem(products);
  const res = get(productDuration, `/api/v1/products/${id}`, params({
    step: 'product', name: 'GET /api/v1/products/{id}',
  }));
  check(res, { 'product 200': (r) => r.status === 200 && field(r, 'id') === id });
}
