// The compose `k6` profile's first step (docker/compose.yaml): seeds what the
// scenario scripts read, through the public API alone (no database access),
// and writes TOKENS_FILE and DATA_FILE for the second step, `k6 run
// <scenario>.js`. k6 cannot write files except from handleSummary, so
// setup() does the work and handleSummary() writes its result.
//
// Environment: BASE_URL (nginx), ADMIN_KEY (X-Admin-Key), OUT_DIR (where the
// two files go), SEED_USERS (default 1000), SEED_PRODUCTS (default 100),
// COUPON_QUANTITY (default half the users), SALE_UNITS (default a third).
// Users sign up (POST /api/v1/users, which answers with a token) and are
// charged 1 000 000 each (POST /api/v1/me/balance/charge) so they can pay.
import http from 'k6/http';

const BASE = (__ENV.BASE_URL || 'http://nginx:8080').replace(/\/+$/, '');
const ADMIN = { 'Content-Type': 'application/json', 'X-Admin-Key': __ENV.ADMIN_KEY || '' };
const OUT = (__ENV.OUT_DIR || '/seed').replace(/\/+$/, '');
const USERS = Number(__ENV.SEED_USERS || 1000);
const PRODUCTS = Number(__ENV.SEED_PRODUCTS || 100);
const COUPON_QUANTITY = Number(__ENV.COUPON_QUANTITY || Math.max(1, Math.ceil(USERS / 2)));
const SALE_UNITS = Number(__ENV.SALE_UNITS || Math.max(1, Math.ceil(USERS / 3)));
const BATCH = 50;

export const options = {
  vus: 1,
  iterations: 1,
  setupTimeout: '10m',
  summaryTrendStats: ['avg', 'p(95)'],
};

function must(res, what) {
  if (res.status < 200 || res.status >= 300) {
    throw new Error(`${what}: HTTP ${res.status} ${res.body}`);
  }
  return res.json();
}

function product(name, stock, i) {
  const body = { name, price: 1000 + (i % 50) * 100, stock, description: 'seeded by compose-seed.js' };
  return must(http.post(`${BASE}/admin/products`, JSON.stringify(body), { headers: ADMIN }), 'POST /admin/products').id;
}

export function setup() {
  const tokens = [];
  for (let start = 0; start < USERS; start += BATCH) {
    const n = Math.min(BATCH, USERS - start);
    const reqs = [];
    for (let i = 0; i < n; i++) {
      reqs.push(['POST', `${BASE}/api/v1/users`, JSON.stringify({ name: `k6 user ${start + i}` }),
        { headers: { 'Content-Type': 'application/json' } }]);
    }
    for (const res of http.batch(reqs)) {
      const u = must(res, 'POST /api/v1/users');
      tokens.push({ user_id: u.id, token: u.token });
    }
    const charges = tokens.slice(start, start + n).map((t) => ['POST', `${BASE}/api/v1/me/balance/charge`,
      JSON.stringify({ amount: 1000000 }),
      { headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${t.token}`,
        'Idempotency-Key': `compose-seed-${t.user_id}` } }]);
    for (const res of http.batch(charges)) {
      must(res, 'POST /api/v1/me/balance/charge');
    }
  }
  const products = [];
  for (let i = 0; i < PRODUCTS; i++) {
    products.push(product(`load product ${i}`, 50, i));
  }
  const contention = [];
  for (let i = 0; i < Math.max(1, Math.ceil(USERS / 2)); i++) {
    contention.push(product(`last unit ${i}`, 1, i));
  }
  const now = Date.now();
  const coupon = must(http.post(`${BASE}/admin/coupons`, JSON.stringify({
    name: 'compose k6 first-come coupon',
    discount_amount: 1000,
    quantity: COUPON_QUANTITY,
    opens_at: new Date(now - 60000).toISOString().replace(/\.\d+Z$/, 'Z'),
    expires_at: new Date(now + 86400000).toISOString().replace(/\.\d+Z$/, 'Z'),
  }), { headers: ADMIN }), 'POST /admin/coupons').id;
  const sale = product('sold out sale product', SALE_UNITS, 0);
  return {
    tokens,
    data: {
      product_count: products.length,
      products,
      contention_products: contention,
      coupon: { id: coupon, quantity: COUPON_QUANTITY },
      sale_product: { id: sale, units: SALE_UNITS, sells_out: true },
    },
  };
}

export default function () {}

export function handleSummary(summary) {
  const seeded = summary.setup_data;
  if (!seeded) {
    return { stdout: 'compose-seed.js: setup failed, nothing written\n' };
  }
  return {
    [`${OUT}/tokens.json`]: JSON.stringify(seeded.tokens),
    [`${OUT}/data.json`]: JSON.stringify(seeded.data),
    stdout: `compose-seed.js: ${seeded.tokens.length} users, ${seeded.data.products.length} products, ` +
      `a coupon of ${COUPON_QUANTITY}, a sale product of ${SALE_UNITS} units written to ${OUT}\n`,
  };
}
