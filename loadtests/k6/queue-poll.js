// Seed 002, 대기열 (waiting room): up to 6 500 VUs polling their place in the
// waiting room. The seed polled every fixed n seconds (settled on n = 15);
// ours comes back when the service says (its Retry-After: short near the
// front, long far back, 60 s at most; active tokens keep alive at 60 s), so
// the polling load stays bounded whatever the crowd. A VU enters once
// (POST /api/v1/queue/tokens) and then polls its token; an expired token
// (404) enters again. Seed figures (final run): p50 6.53 ms, p90 8.69 ms,
// p95 10.01 ms, max 290.60 ms, about 400 req/s at 6 000 VUs.
//
// Every poll is also tagged with the load level it ran at (active VUs,
// rounded down to a step of 500 × VU_SCALE); one threshold per level,
// `queue_poll_duration{vus:N}` p95 < 200 ms, puts each level's p95 in the
// summary: the highest level that held is the most VUs held under 200 ms.
import exec from 'k6/execution';
import { Trend } from 'k6/metrics';
import { buildOptions, loadTokens, params, http, url, check, field, think, scaleCount } from './lib/common.js';

const PEAK = 6500;
const STEP = scaleCount(500);
const levels = [];
for (let v = 0; v <= scaleCount(PEAK); v += STEP) {
  levels.push(v);
}
const perLevel = {};
for (const v of levels) {
  perLevel[`queue_poll_duration{vus:${v}}`] = ['p(95)<200'];
}

export const options = buildOptions({
  shape: {
    executor: 'ramping-vus',
    startVUs: 0,
    stages: [
      { target: 1000, duration: '30s' },
      { target: 2000, duration: '30s' },
      { target: 3000, duration: '30s' },
      { target: 4000, duration: '30s' },
      { target: 5000, duration: '30s' },
      { target: 6000, duration: '30s' },
      { target: 6500, duration: '30s' },
      { target: 6000, duration: '30s' },
      { target: 4000, duration: '30s' },
      { target: 2000, duration: '30s' },
      { target: 0, duration: '30s' },
    ],
  },
  thresholds: Object.assign({
    queue_poll_duration: ['p(95)<10.01'],
    http_req_failed: ['rate<0.01'],
    checks: ['rate>0.99'],
  }, perLevel),
});

const tokens = loadTokens();
const enterDuration = new Trend('queue_enter_duration', true);
const pollDuration = new Trend('queue_poll_duration', true);

let queueToken = null;

/** The load level now: active VUs rounded down to STEP. */
function level() {
  return Math.floor(exec.instance.vusActive / STEP) * STEP;
}

/** The service's Retry-After in seconds (1..60), or the seed's 15 s. */
function retryAfter(res) {
  const s = Number(res.headers['Retry-After']);
  return isFinite(s) && s >= 1 ? Math.min(s, 60) : 15;
}

export default function () {
  const user = tokens[(__VU - 1) % tokens.length];
  let wait = 15;
  if (queueToken === null) {
    const entered = http.post(url('/api/v1/queue/tokens'), null, params({
      token: user.token, step: 'queue_enter', name: 'POST /api/v1/queue/tokens', expect: [200, 201],
    }));
    enterDuration.add(entered.timings.duration);
    if (check(entered, { 'entered the waiting room (201 new, 200 already in)': (r) => (r.status === 201 || r.status === 200) && !!field(r, 'token') })) {
      queueToken = field(entered, 'token');
      wait = retryAfter(entered);
    }
  } else {
    const poll = http.get(url(`/api/v1/queue/tokens/${queueToken}`), params({
      token: user.token, step: 'queue_poll', name: 'GET /api/v1/queue/tokens/{token}', expect: [200, 404],
    }));
    pollDuration.add(poll.timings.duration, { vus: String(level()) });
    check(poll, {
      'poll answered (200 waiting/active, or 404 expired)': (r) => (r.status === 200
        && ['waiting', 'active'].includes(field(r, 'status'))) || r.status === 404,
    });
    if (poll.status === 404) {
      queueToken = null;
      wait = 1;
    } else {
      wait = retryAfter(poll);
    }
  }
  think(wait);
}
