// Seed 001, Peak Test: 30 VUs, spike to 600 in 5 s, back to 30, spike again.
// Seed figures: 347.2 req/s, 69.0 iterations/s, http_req_duration avg 4.77 ms,
// med 1.94 ms, p90 6.05 ms, p95 14.01 ms, max 214.08 ms, 0 % failed.
import { buildOptions, loadValue } from './lib/common.js';
import { flowIteration, flowThresholds } from './lib/flow.js';

export const options = buildOptions({
  shape: {
    executor: 'ramping-vus',
    startVUs: 0,
    stages: [
      { duration: '10s', target: 30 },
      { duration: '5s', target: 600 },
      { duration: '20s', target: 30 },
      { duration: '5s', target: 600 },
      { duration: '10s', target: 0 },
    ],
  },
  // The seed's http_req_duration p95 is the bar to beat.
  thresholds: flowThresholds(14.01),
});

const productCount = loadValue('product_count', 20);
const productPages = Math.max(1, Math.ceil(productCount / 20));

export default function () {
  flowIteration(productPages);
}
