// Seed 001, Endurance Test: 150 VUs for 4 minutes (15 s ramps).
// Seed figures: 165.6 req/s, 33.0 iterations/s, http_req_duration avg 10.37 ms,
// med 5.05 ms, p90 18.07 ms, p95 27.44 ms, max 802 ms, 0 % failed.
import { buildOptions, loadValue } from './lib/common.js';
import { flowIteration, flowThresholds } from './lib/flow.js';

export const options = buildOptions({
  shape: {
    executor: 'ramping-vus',
    startVUs: 0,
    stages: [
      { duration: '15s', target: 150 },
      { duration: '4m', target: 150 },
      { duration: '15s', target: 0 },
    ],
  },
  // The seed's http_req_duration p95 is the bar to beat.
  thresholds: flowThresholds(27.44),
});

const productCount = loadValue('product_count', 20);
const productPages = Math.max(1, Math.ceil(productCount / 20));

export default function () {
  flowIteration(productPages);
}
