// Seed 003, scenario 2 (충전 → 잔액조회): 100 VUs for 2 minutes, each
// iteration charges a random user's balance, then reads it back.
// Seed figures: charge avg 7.61 ms / p95 9.12 ms, balance avg 2.53 ms /
// p95 3.30 ms, 49.6 req/s, 0 % failed, iterations 3.0-5.0 s (think time).
import { Trend } from 'k6/metrics';
import {
  buildOptions, loadTokens, params, post, get, check, field, think, idempotencyKey, randomInt,
} from './lib/common.js';

export const options = buildOptions({
  shape: { executor: 'constant-vus', vus: 100, duration: '2m' },
  thresholds: {
    // The seed's measured p95 is the bar to beat.
    charge_duration: ['p(95)<9.12'],
    balance_duration: ['p(95)<3.30'],
    http_req_failed: ['rate<0.01'],
    checks: ['rate>0.99'],
  },
});

const tokens = loadTokens();
const chargeDuration = new Trend('charge_duration', true);
const balanceDuration = new Trend('balance_duration', true);

export default function () {
  const user = tokens[Math.floor(Math.random() * tokens.length)];
  const amount = randomInt(1000, 10000);
  const charged = post(chargeDuration, '/api/v1/me/balance/charge', { amount }, params({
    token: user.token, step: 'charge', name: 'POST /api/v1/me/balance/charge',
    headers: { 'Idempotency-Key': idempotencyKey() },
  }));
  check(charged, {
    'charge 200 with the new balance': (r) => r.status === 200 && field(r, 'balance') >= amount,
  });
  think(1);
  const balance = get(balanceDuration, '/api/v1/me/balance', params({
    token: user.token, step: 'balance', name: 'GET /api/v1/me/balance',
  }));
  check(balance, {
    'balance 200 for the caller': (r) => r.status === 200 && field(r, 'user_id') === user.user_id,
  });
  // The seed's iterations took 3-5 s (avg 4 s): think time between calls.
  think(randomInt(2000, 4000) / 1000);
}
