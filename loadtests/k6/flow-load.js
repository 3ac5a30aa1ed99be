// Seed 001, Load Test: ramp to 150 VUs in 15 s, hold 15 s, ramp down 15 s.
// Seed figures: 122.2 req/s, 24.4 iterations/s, http_req_duration avg 6.56 ms,
// med 4.97 ms, p90 11.68 ms, p95 16.07 ms, max 110.93 ms, 0 % failed.
import { buildOptions, loadValue } from './lib/common.js';
import { flowIteration, flowThresholds } from './lib/flow.js';

export const options = buildOptions({
  shape: {
    executor: 'ramping-vus',
    startVUs: 0,
    stages: [
      { duration: '15s', target: 150 },
      { duration: '15s', target: 150 },
      { duration: '15s', target: 0 },
    ],
  },
  // The seed's http_req_duration p95 is the bar to beat.
  thresholds: flowThresholds(16.07),
});

const productCount = loadValue('product_count', 20);
const productPages = Math.max(1, Math.ceil(productCount / 20));

export default function () {
  flowIteration(productPages);
}
