// Seed 002, 대기열 (waiting room): up to 6 500 VUs, each polling its place in
// the waiting room every 15 s (the seed's chosen n = 15). A VU enters once
// (POST /api/v1/queue/tokens) and then polls its token; an expired token
// (404) enters again. Seed figures (final run): p50 6.53 ms, p90 8.69 ms,
// p95 10.01 ms, max 290.60 ms, about 400 req/s at 6 000 VUs.
import { Trend } from 'k6/metrics';
import { buildOptions, loadTokens, params, get, post, check, field, think } from './lib/common.js';

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
  thresholds: {
    queue_poll_duration: ['p(95)<10.01'],
    http_req_failed: ['rate<0.01'],
    checks: ['rate>0.99'],
  },
});

const tokens = loadTokens();
const enterDuration = new Trend('queue_enter_duration', true);
const pollDuration = new Trend('queue_poll_duration', true);

let queueToken = null;

export default function () {
  const user = tokens[(__VU - 1) % tokens.length];
  if (queueToken === null) {
    const entered = post(enterDuration, '/api/v1/queue/tokens', null, params({
      token: user.token, step: 'queue_enter', name: 'POST /api/v1/queue/tokens', expect: [200, 201],
    }));
    if (check(entered, { 'entered the waiting room (201 new, 200 already in)': (r) => (r.status === 201 || r.status === 200) && !!field(r, 'token') })) {
      queueToken = field(entered, 'token');
    }
  } else {
    const poll = get(pollDuration, `/api/v1/queue/tokens/${queueToken}`, params({
      token: user.token, step: 'queue_poll', name: 'GET /api/v1/queue/tokens/{token}', expect: [200, 404],
    }));
    check(poll, {
      'poll answered (200 waiting/active, or 404 expired)': (r) => (r.status === 200
        && ['waiting', 'active'].includes(field(r, 'status'))) || r.status === 404,
    });
    if (poll.status === 404) {
      queueToken = null;
    }
  }
  think(15);
}
