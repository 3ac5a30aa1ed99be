// The mixed load of a chaos run (`loadtest chaos <fault>`, crates/loadtest/src/chaos):
// product reads and order + payment at a constant rate for the whole run, and
// at FAULT_AT (seconds after the start, when the runner injects the fault) a
// coupon burst and a flash sale, one iteration per VU.
//
// Every answer is one line of the console output (`--console-output`, raw
// format), a JSON object the runner reads back:
//   {t: end ms since epoch, s: status (0: no answer), d: ms, n: step,
//    c: error code, ra: 1 when a 503/429 carried Retry-After,
//    id / u: what a 2xx acknowledged (user coupon, order, paid order) and to whom}
// so it can draw the timeline, count statuses, and check that every 2xx a
// client was told is in PostgreSQL.
//
// Environment: TOTAL (s, default 40), FAULT_AT (s, default 10), READ_RATE (/s,
// 60), ORDER_RATE (/s, 25), BURST_VUS (coupon burst, 300), SALE_VUS (flash
// sale, 300), PAY_TIMEOUT (s, 5: a payment that does not answer in time is
// retried once with the same Idempotency-Key, as a client would).
// DATA_FILE: {products, coupon: {id, quantity}, sale_product: {id, units}}.
import http from 'k6/http';
import exec from 'k6/execution';
import { loadTokens, loadList, loadValue, randomItem, idempotencyKey, url, sleep } from './lib/common.js';

const num = (name, fallback) => {
  const v = Number(__ENV[name]);
  return __ENV[name] !== undefined && isFinite(v) && v >= 0 ? v : fallback;
};
const TOTAL = num('TOTAL', 40);
const FAULT_AT = num('FAULT_AT', 10);
const READ_RATE = Math.max(1, Math.round(num('READ_RATE', 60)));
const ORDER_RATE = Math.max(1, Math.round(num('ORDER_RATE', 25)));
const BURST_VUS = Math.max(1, Math.round(num('BURST_VUS', 300)));
const SALE_VUS = Math.max(1, Math.round(num('SALE_VUS', 300)));
const PAY_TIMEOUT = num('PAY_TIMEOUT', 5);
// The bursts start just after the fault lands.
const BURST_AT = `${Math.round((FAULT_AT + 0.3) * 1000)}ms`;

export const options = {
  scenarios: {
    reads: {
      executor: 'constant-arrival-rate', exec: 'reads', rate: READ_RATE, timeUnit: '1s',
      duration: `${TOTAL}s`, preAllocatedVUs: 20, maxVUs: 400,
    },
    orders: {
      executor: 'constant-arrival-rate', exec: 'orderPay', rate: ORDER_RATE, timeUnit: '1s',
      duration: `${TOTAL}s`, preAllocatedVUs: 20, maxVUs: 600,
    },
    coupon: {
      executor: 'per-vu-iterations', exec: 'coupon', vus: BURST_VUS, iterations: 1,
      startTime: BURST_AT, maxDuration: `${Math.max(10, TOTAL - FAULT_AT)}s`,
    },
    sale: {
      executor: 'per-vu-iterations', exec: 'sale', vus: SALE_VUS, iterations: 1,
      startTime: BURST_AT, maxDuration: `${Math.max(10, TOTAL - FAULT_AT)}s`,
    },
  },
  // The runner judges the run (rules, statuses); k6 only measures.
  thresholds: {},
  summaryTrendStats: ['avg', 'med', 'p(95)', 'p(99)', 'max', 'count'],
  setupTimeout: '60s',
};

const tokens = loadTokens();
const products = loadList('products');
const couponData = loadValue('coupon', { id: 1, quantity: 1 });
const saleData = loadValue('sale_product', { id: 1, units: 1 });

function body(res, key) {
  try {
    const v = res.json(key);
    return v === null ? undefined : v;
  } catch (_) {
    return undefined;
  }
}

/** One line per answer (see the top of the file). */
function record(step, res, ack) {
  const line = { t: Date.now(), s: res.status, d: Math.round(res.timings.duration * 10) / 10, n: step };
  if (res.status >= 400) {
    const code = body(res, 'code');
    if (code !== undefined) line.c = code;
    if ((res.status === 503 || res.status === 429) && res.headers['Retry-After'] !== undefined) line.ra = 1;
  }
  if (ack && res.status >= 200 && res.status < 300) Object.assign(line, ack(res));
  console.log(JSON.stringify(line));
}

function headers(user, key) {
  const h = { 'Content-Type': 'application/json', Authorization: `Bearer ${user.token}` };
  if (key) h['Idempotency-Key'] = key;
  return h;
}

function opts(user, step, key, timeout) {
  return {
    headers: headers(user, key), tags: { name: step }, timeout: timeout || '30s',
    responseCallback: http.expectedStatuses({ min: 200, max: 499 }),
  };
}

export function reads() {
  const id = randomItem(products);
  const res = http.get(url(`/api/v1/products/${id}`), { tags: { name: 'product' }, timeout: '30s' });
  record('product', res);
}

/** Orders one unit of `product` and pays it; the payment is retried once
 * with the same key when it got no answer or a 502/503/504. */
function orderAndPay(user, product, step) {
  const order = http.post(url('/api/v1/orders'),
    JSON.stringify({ items: [{ product_id: product, quantity: 1 }] }),
    opts(user, step, idempotencyKey()));
  record(step, order, (r) => ({ id: body(r, 'id'), u: user.user_id }));
  if (order.status !== 201) return;
  const id = body(order, 'id');
  const key = idempotencyKey();
  for (let attempt = 0; attempt < 2; attempt += 1) {
    const paid = http.post(url(`/api/v1/orders/${id}/payment`), null,
      opts(user, 'pay', key, `${PAY_TIMEOUT}s`));
    record('pay', paid, (r) => ({ id: body(r, 'order_id'), u: user.user_id }));
    if (![0, 502, 503, 504].includes(paid.status)) return;
    sleep(1);
  }
}

export function orderPay() {
  orderAndPay(randomItem(tokens), randomItem(products), 'order');
}

/** One user per VU: the burst's VUs never share a user. */
function ownUser() {
  return tokens[exec.vu.idInTest % tokens.length];
}

export function coupon() {
  const user = ownUser();
  const res = http.post(url(`/api/v1/coupons/${couponData.id}/issue`), null, opts(user, 'coupon'));
  record('coupon', res, (r) => ({ id: body(r, 'user_coupon_id'), u: user.user_id }));
}

export function sale() {
  orderAndPay(ownUser(), saleData.id, 'sale');
}
