// Seed 001's user journey (회원가입 → 토큰 발급 → 대기 → 조회 → 좌석 점유 → 결제),
// on our contract: sign up, charge (a new user has no money to pay with),
// enter the waiting room and poll until active, browse the product list,
// read a product's stock, order it, pay. 1 s think time between the steps
// (the seed's iterations took about 4 s for 5 requests).
import { Trend, Counter } from 'k6/metrics';
import {
  params, get, post, check, field, think, sleep, idempotencyKey, randomInt, randomItem,
} from './common.js';

export const signupDuration = new Trend('signup_duration', true);
export const chargeDuration = new Trend('charge_duration', true);
export const queueEnterDuration = new Trend('queue_enter_duration', true);
export const queuePollDuration = new Trend('queue_poll_duration', true);
export const browseDuration = new Trend('browse_duration', true);
export const productDuration = new Trend('product_duration', true);
export const orderDuration = new Trend('order_duration', true);
export const payDuration = new Trend('pay_duration', true);
export const flowCompleted = new Counter('flow_completed');
export const outOfStock = new Counter('order_out_of_stock');

const MAX_POLLS = 120;

/** Every threshold the four 001 scenarios share, with the seed's p95. */
export function flowThresholds(seedP95) {
  return {
    http_req_duration: [`p(95)<${seedP95}`],
    http_req_failed: ['rate<0.01'],
    checks: ['rate>0.99'],
  };
}

export function flowIteration(productPages) {
  const signup = post(signupDuration, '/api/v1/users', { name: `flow-${__VU}-${__ITER}` }, params({
    step: 'signup', name: 'POST /api/v1/users', expect: [201],
  }));
  if (!check(signup, { 'signed up': (r) => r.status === 201 && !!field(r, 'token') })) {
    return;
  }
  const token = field(signup, 'token');
  const charge = post(chargeDuration, '/api/v1/me/balance/charge', { amount: 1000000 }, params({
    token, step: 'charge', name: 'POST /api/v1/me/balance/charge',
    headers: { 'Idempotency-Key': idempotencyKey() },
  }));
  check(charge, { 'charged': (r) => r.status === 200 });

  const entered = post(queueEnterDuration, '/api/v1/queue/tokens', null, params({
    token, step: 'queue_enter', name: 'POST /api/v1/queue/tokens', expect: [200, 201],
  }));
  if (!check(entered, { 'entered the waiting room (201 new, 200 already in)': (r) => (r.status === 201 || r.status === 200) && !!field(r, 'token') })) {
    return;
  }
  const queueToken = field(entered, 'token');
  let status = field(entered, 'status');
  let retryAfter = field(entered, 'retry_after');
  let polls = 0;
  while (status !== 'active' && polls < MAX_POLLS) {
    // The server says when to come back; bounded to 0.2-2 s here.
    sleep(Math.min(2, Math.max(0.2, Number(retryAfter) || 1)));
    const poll = get(queuePollDuration, `/api/v1/queue/tokens/${queueToken}`, params({
      token, step: 'queue_poll', name: 'GET /api/v1/queue/tokens/{token}',
    }));
    polls += 1;
    status = field(poll, 'status');
    retryAfter = field(poll, 'retry_after');
  }
  if (!check(status, { 'became active in the waiting room': (s) => s === 'active' })) {
    return;
  }
  const queueHeader = { 'X-Queue-Token': queueToken };

  think(1);
  const page = randomInt(1, productPages);
  const list = get(browseDuration, `/api/v1/products?page=${page}&size=20`, params({
    token, step: 'browse', name: 'GET /api/v1/products', headers: queueHeader,
  }));
  const items = field(list, 'items') || [];
  if (!check(list, { 'product list': (r) => r.status === 200 && items.length > 0 })) {
    return;
  }
  think(1);
  const chosen = randomItem(items);
  const detail = get(productDuration, `/api/v1/products/${chosen.id}`, params({
    token, step: 'product', name: 'GET /api/v1/products/{id}', headers: queueHeader,
  }));
  check(detail, { 'product detail with stock': (r) => r.status === 200 && typeof field(r, 'stock') === 'number' });

  think(1);
  const order = post(orderDuration, '/api/v1/orders', { items: [{ product_id: chosen.id, quantity: 1 }] }, params({
    token, step: 'order', name: 'POST /api/v1/orders', expect: [201, 409],
    headers: Object.assign({ 'Idempotency-Key': idempotencyKey() }, queueHeader),
  }));
  if (order.status === 409) {
    outOfStock.add(1);
    return;
  }
  if (!check(order, { 'order created pending': (r) => r.status === 201 && field(r, 'status') === 'pending' })) {
    return;
  }
  think(1);
  const paid = post(payDuration, `/api/v1/orders/${field(order, 'id')}/payment`, null, params({
    token, step: 'pay', name: 'POST /api/v1/orders/{id}/payment',
    headers: Object.assign({ 'Idempotency-Key': idempotencyKey() }, queueHeader),
  }));
  if (check(paid, { 'order paid': (r) => r.status === 200 && field(r, 'status') === 'paid' })) {
    flowCompleted.add(1);
  }
}
