// Seed 001, Stress Test: +100 VUs every 20 s (10 s ramp, 10 s hold) up to 600.
// Seed figures: 352.4 req/s, 69.4 iterations/s, http_req_duration avg 9.52 ms,
// med 3.2 ms, p90 16.6 ms, p95 37.3 ms, max 522.73 ms, 0.02 % failed
// (dial i/o timeouts from 600 VUs).
import { buildOptions, loadValue } from './lib/common.js';
import { flowIteration, flowThresholds } from './lib/flow.js';

export const options = buildOptions({
  shape: {
    executor: 'ramping-vus',
    startVUs: 0,
    stages: [
      { duration: '10s', target: 100 },
      { duration: '10s', target: 100 },
      { duration: '10s', target: 200 },
      { duration: '10s', target: 200 },
      { duration: '10s', target: 300 },
      { duration: '10s', target: 300 },
      { duration: '10s', target: 400 },
      { duration: '10s', target: 400 },
      { duration: '10s', target: 500 },
      { duration: '10s', target: 500 },
      { duration: '10s', target: 600 },
      { duration: '10s', target: 600 },
      { duration: '10s', target: 0 },
    ],
  },
  // The seed's http_req_duration p95 is the bar to beat.
  thresholds: flowThresholds(37.3),
});

const productCount = loadValue('product_count', 20);
const productPages = Math.max(1, Math.ceil(productCount / 20));

export default function () {
  flowIteration(productPages);
}
