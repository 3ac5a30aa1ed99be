// Seed 000, Load Test (주문 결제): during a sale 1 000 users per second pay
// an order: read the order, sleep 1 s, pay it from the balance. The seed's
// goal: 500 TPS per instance with 2 instances (it gave no measured figures).
// The runner creates one pending order per expected iteration beforehand
// (DATA_FILE "orders": [{id, u}], u = index into TOKENS_FILE).
import { Trend } from 'k6/metrics';
import exec from 'k6/execution';
import {
  buildOptions, loadTokens, loadList, params, get, post, check, field, think, idempotencyKey,
} from './lib/common.js';

export const options = buildOptions({
  shape: {
    executor: 'constant-arrival-rate',
    rate: 1000,
    timeUnit: '1s',
    duration: '20s',
    preAllocatedVUs: 1200,
    maxVUs: 2500,
  },
  thresholds: {
    order_read_duration: ['p(95)<500'],
    pay_duration: ['p(95)<500'],
    http_req_failed: ['rate<0.01'],
    checks: ['rate>0.99'],
    dropped_iterations: ['count<1000'],
  },
});

const tokens = loadTokens();
const orders = loadList('orders');
const orderReadDuration = new Trend('order_read_duration', true);
const payDuration = new Trend('pay_duration', true);

export default function () {
  const order = orders[exec.scenario.iterationInTest % orders.length];
  const user = tokens[order.u % tokens.length];
  const read = get(orderReadDuration, `/api/v1/orders/${order.id}`, params({
    token: user.token, step: 'order_read', name: 'GET /api/v1/orders/{id}',
  }));
  check(read, { 'order 200 and pending': (r) => r.status === 200 && field(r, 'status') === 'pending' });
  think(1);
  const paid = post(payDuration, `/api/v1/orders/${order.id}/payment`, null, params({
    token: user.token, step: 'pay', name: 'POST /api/v1/orders/{id}/payment',
    headers: { 'Idempotency-Key': idempotencyKey() },
  }));
  check(paid, { 'payment 200 paid': (r) => r.status === 200 && field(r, 'status') === 'paid' });
}
