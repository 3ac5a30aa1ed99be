// The ceiling: GET /health/live (no database, no Redis) with the VU shape of
// the scenario it is measured beside. The runner passes that scenario's
// already scaled k6 scenario as JSON in CEILING_SCENARIO; without it this is
// 100 VUs for 20 s. No think time: the most this harness, proxy and server
// can push through at that concurrency on this machine.
import { Trend } from 'k6/metrics';
import { buildOptions, params, get, check } from './lib/common.js';

const given = __ENV.CEILING_SCENARIO ? JSON.parse(__ENV.CEILING_SCENARIO) : null;

export const options = buildOptions({
  shape: given || { executor: 'constant-vus', vus: 100, duration: '20s' },
  scaled: given === null,
  thresholds: { http_req_failed: ['rate<0.01'] },
});

const liveDuration = new Trend('live_duration', true);
// Built once, as the scenarios build their per-VU requests before a burst.
const live = params({ step: 'live', name: 'GET /health/live' });
const ok = { 'live 200': (r) => r.status === 200 };

export default function () {
  check(get(liveDuration, '/health/live', live), ok);
}
