// Issue 24, paying during the flash sale: a constant 300 iterations per
// second for 20 s, each one a random seeded user ordering one unit of the
// SAME product (DATA_FILE "sale_product": {id, units}, enough units for every
// iteration) and paying that order from the balance (1 000 000 each, enough).
// Bars: order and pay p95 < 100 ms, no failed request, no dropped iteration.
import { Trend, Counter } from 'k6/metrics';
import {
  buildOptions, loadTokens, loadValue, params, post, check, field, idempotencyKey, randomItem,
} from './lib/common.js';

const sale = loadValue('sale_product', { id: 1, units: 10000 });

export const options = buildOptions({
  shape: {
    executor: 'constant-arrival-rate',
    rate: 300,
    timeUnit: '1s',
    duration: '20s',
    preAllocatedVUs: 600,
    maxVUs: 3000,
  },
  thresholds: {
    order_duration: ['p(95)<100'],
    pay_duration: ['p(95)<100'],
    http_req_failed: ['rate<0.01'],
    checks: ['rate>0.99'],
    dropped_iterations: ['count<1'],
  },
});

const tokens = loadTokens();
const orderDuration = new Trend('order_duration', true);
const payDuration = new Trend('pay_duration', true);
const paidOrders = new Counter('order_paid');
// The 503s (db_busy: the pool ran dry) among the failed orders and payments.
const orderUnavailable = new Counter('order_unavailable');
const payUnavailable = new Counter('pay_unavailable');
const body = { items: [{ product_id: sale.id, quantity: 1 }] };

export default function () {
  const user = randomItem(tokens);
  const order = post(orderDuration, '/api/v1/orders', body, params({
    token: user.token, step: 'order', name: 'POST /api/v1/orders', expect: [201],
    headers: { 'Idempotency-Key': idempotencyKey() },
  }));
  if (!check(order, { 'order 201 pending': (r) => r.status === 201 && field(r, 'status') === 'pending' })) {
    if (order.status === 503) {
      orderUnavailable.add(1);
    }
    return;
  }
  const paid = post(payDuration, `/api/v1/orders/${field(order, 'id')}/payment`, null, params({
    token: user.token, step: 'pay', name: 'POST /api/v1/orders/{id}/payment',
    headers: { 'Idempotency-Key': idempotencyKey() },
  }));
  if (check(paid, { 'payment 200 paid': (r) => r.status === 200 && field(r, 'status') === 'paid' })) {
    paidOrders.add(1);
  } else if (paid.status === 503) {
    payUnavailable.add(1);
  }
}
