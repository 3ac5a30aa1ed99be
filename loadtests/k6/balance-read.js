// Issue 2's measurement (no seed): 100 VUs for 20 s reading their own
// balance as fast as they can, to set beside GET /health/live (the ceiling
// the runner measures with the same VU shape).
import { Trend } from 'k6/metrics';
import { buildOptions, loadTokens, params, get, check } from './lib/common.js';

export const options = buildOptions({
  shape: { executor: 'constant-vus', vus: 100, duration: '20s' },
  thresholds: {
    balance_duration: ['p(95)<100'],
    http_req_failed: ['rate<0.01'],
    checks: ['rate>0.99'],
  },
});

const tokens = loadTokens();
const balanceDuration = new Trend('balance_duration', true);

export default function () {
  // One user per VU: reads only, no think time.
  const user = tokens[(__VU - 1) % tokens.length];
  const res = get(balanceDuration, '/api/v1/me/balance', params({
    token: user.token, step: 'balance', name: 'GET /api/v1/me/balance',
  }));
  check(res, { 'balance 200': (r) => r.status === 200 });
}
