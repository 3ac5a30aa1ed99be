// Issue 5's measurement: 100 VUs for 20 s reading product details as fast as
// they can (no think time), to set beside GET /health/live and to run again
// with the detail cache off (`--set catalog.detail_cache=false`). Seed 004's
// product read is the reference, though its run shape differs (100 VUs x
// 1 000 iterations): with cache 17 506 req/s, p95 18.42 ms; before the cache
// 13 209 req/s, p95 24.87 ms.
//
// Which products: a sale's crowd reads the few products on its front page,
// not the whole catalog evenly. 90 % of reads go to HOT_PRODUCTS (default 100)
// of the seeded products, 10 % to any of them (the long tail, mostly misses).
import { Trend } from 'k6/metrics';
import { buildOptions, loadList, params, get, check, field, randomItem } from './lib/common.js';

export const options = buildOptions({
  shape: { executor: 'constant-vus', vus: 100, duration: '20s' },
  thresholds: {
    product_duration: ['p(95)<18.42'],
    http_req_failed: ['rate<0.01'],
    checks: ['rate>0.99'],
  },
});

const products = loadList('products');
const HOT = Math.max(1, Math.min(products.length, Number(__ENV.HOT_PRODUCTS || 100)));
const productDuration = new Trend('product_duration', true);

export default function () {
  const id = Math.random() < 0.9 ? products[Math.floor(Math.random() * HOT)] : randomItem(products);
  const res = get(productDuration, `/api/v1/products/${id}`, params({
    step: 'product', name: 'GET /api/v1/products/{id}',
  }));
  check(res, { 'product 200': (r) => r.status === 200 && field(r, 'id') === id });
}
