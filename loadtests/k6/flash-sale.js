// Issue 24, the flash sale: ONE product with 500 units, 2 000 VUs at once
// (one iteration each) drawn from 1 500 users, so 500 users send two
// requests, each POSTing one order of one unit through the two instances.
// Exactly 500 orders are created (201); every other answer is a correct
// 409 out_of_stock. Anything else (503 db_busy, a timeout, a 500) is counted
// in `order_other` and crosses a threshold. The runner creates a fresh
// product per burst (DATA_FILE "sale_product": {id, units}) and checks in
// SQL afterwards that each sale product sold exactly its units.
import { Trend, Counter } from 'k6/metrics';
import {
  buildOptions, loadTokens, loadValue, params, post, check, field, errorCode, think, scaleCount,
} from './lib/common.js';

const sale = loadValue('sale_product', { id: 1, units: 500 });
// 1 500 distinct buyers for 2 000 VUs (scaled alike by VU_SCALE).
const BUYERS = scaleCount(1500);

export const options = buildOptions({
  shape: { executor: 'per-vu-iterations', vus: 2000, iterations: 1, maxDuration: '2m' },
  thresholds: {
    order_duration: ['p(95)<500'],
    http_req_failed: ['rate<0.01'],
    checks: ['rate>0.99'],
    order_created: [`count==${sale.units}`],
    order_other: ['count==0'],
  },
});

const tokens = loadTokens();
const orderDuration = new Trend('order_duration', true);
const created = new Counter('order_created');
const outOfStock = new Counter('order_out_of_stock');
// Neither 201 nor 409 out_of_stock; `order_unavailable` is the 503s among them.
const other = new Counter('order_other');
const unavailable = new Counter('order_unavailable');

// Built in this VU's init context, before the burst (`__VU` is 0 while k6
// only reads the options). The Idempotency-Key is this VU's own for this
// sale's product: a user with two VUs sends two distinct orders.
const request = __VU > 0 ? {
  body: { items: [{ product_id: sale.id, quantity: 1 }] },
  params: params({
    token: tokens[(__VU - 1) % Math.min(BUYERS, tokens.length)].token,
    step: 'order',
    name: 'POST /api/v1/orders',
    expect: [201, 409],
    headers: { 'Idempotency-Key': `flash-sale-${sale.id}-vu-${__VU}` },
  }),
} : null;

const answered = {
  'order answered (201 pending, or 409 out_of_stock)': (a) => (a.status === 201 && a.pending)
    || (a.status === 409 && a.code === 'out_of_stock'),
};

export default function () {
  if (__ITER > 0) {
    return; // one order per VU, even when DURATION_SCALE asks for more
  }
  const res = post(orderDuration, '/api/v1/orders', request.body, request.params);
  const code = res.status === 409 ? errorCode(res) : '';
  const pending = res.status === 201 && field(res, 'status') === 'pending';
  check({ status: res.status, code, pending }, answered);
  if (res.status === 201) {
    created.add(1);
  } else if (code === 'out_of_stock') {
    outOfStock.add(1);
  } else {
    other.add(1);
    if (res.status === 503) {
      unavailable.add(1);
    }
  }
  think(0.5);
}
