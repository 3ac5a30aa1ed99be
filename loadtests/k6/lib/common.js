// Shared helpers of the seed scenarios: environment, scaling, data files,
// requests with per-step tags and metrics. Every scenario script imports this.
//
// Environment (all optional except where a script needs the file):
//   BASE_URLS       comma-separated base URLs; requests are spread over them
//                   round-robin (default http://127.0.0.1:8080)
//   TOKENS_FILE     JSON array of {user_id, token} (the runner writes it)
//   DATA_FILE       JSON object with seeded ids: {products, contention_products,
//                   coupon, orders} (the runner writes what the scenario needs)
//   VU_SCALE        multiplies VU counts and arrival rates (default 1)
//   DURATION_SCALE  multiplies durations and per-VU iteration counts (default 1)
//   THINK_SCALE     multiplies think times (sleeps); 0 removes them (default 1)
//   LOADTEST_INSPECT=1  only build the options (the runner's `k6 inspect`):
//                   data files are not read
import http from 'k6/http';
import { check, sleep } from 'k6';
import { SharedArray } from 'k6/data';

function envNumber(name, fallback) {
  const raw = __ENV[name];
  if (raw === undefined || raw === '') {
    return fallback;
  }
  const value = Number(raw);
  if (!isFinite(value) || value < 0) {
    throw new Error(`${name} must be a non-negative number, got "${raw}"`);
  }
  return value;
}

export const VU_SCALE = envNumber('VU_SCALE', 1);
export const DURATION_SCALE = envNumber('DURATION_SCALE', 1);
export const THINK_SCALE = envNumber('THINK_SCALE', 1);
export const INSPECT = __ENV.LOADTEST_INSPECT === '1';

export const BASE_URLS = (__ENV.BASE_URLS || __ENV.BASE_URL || 'http://127.0.0.1:8080')
  .split(',')
  .map((s) => s.trim().replace(/\/+$/, ''))
  .filter((s) => s.length > 0);
if (BASE_URLS.length === 0) {
  throw new Error('BASE_URLS is empty');
}

let roundRobin = 0;
/** An absolute URL for `path`, spreading requests over BASE_URLS. */
export function url(path) {
  roundRobin += 1;
  return BASE_URLS[(__VU + roundRobin) % BASE_URLS.length] + path;
}

// ---------------------------------------------------------------- durations

const UNIT_MS = { ms: 1, s: 1000, m: 60000, h: 3600000 };

/** '1m30s', '500ms', '20.4s' -> milliseconds. */
export function parseDuration(text) {
  const s = String(text).trim();
  const re = /(\d+(?:\.\d+)?)(ms|h|m|s)/g;
  let total = 0;
  let consumed = 0;
  let m;
  while ((m = re.exec(s)) !== null) {
    total += Number(m[1]) * UNIT_MS[m[2]];
    consumed += m[0].length;
  }
  if (consumed !== s.length || s.length === 0) {
    throw new Error(`not a duration: "${text}"`);
  }
  return total;
}

/** Milliseconds -> a k6 duration string ('20s' or '20400ms'). */
export function formatDuration(ms) {
  const rounded = Math.round(ms);
  return rounded % 1000 === 0 ? `${rounded / 1000}s` : `${rounded}ms`;
}

/** Scales a duration by DURATION_SCALE (at least 100 ms unless it was 0). */
export function scaleDuration(text, factor = DURATION_SCALE) {
  const ms = parseDuration(text);
  if (ms === 0) {
    return '0s';
  }
  return formatDuration(Math.max(100, ms * factor));
}

/** Scales a VU count or rate by VU_SCALE (a nonzero count stays at least 1). */
export function scaleCount(n, factor = VU_SCALE) {
  if (n <= 0) {
    return 0;
  }
  return Math.max(1, Math.round(n * factor));
}

/**
 * The seed's VU shape, scaled. Supported executors: constant-vus,
 * ramping-vus, per-vu-iterations, shared-iterations, constant-arrival-rate.
 */
export function scaleShape(shape, vuFactor = VU_SCALE, durationFactor = DURATION_SCALE) {
  const out = Object.assign({}, shape);
  const d = (t) => scaleDuration(t, durationFactor);
  const n = (c) => scaleCount(c, vuFactor);
  switch (shape.executor) {
    case 'constant-vus':
      out.vus = n(shape.vus);
      out.duration = d(shape.duration);
      break;
    case 'ramping-vus':
      out.startVUs = n(shape.startVUs || 0);
      out.stages = shape.stages.map((st) => ({ duration: d(st.duration), target: n(st.target) }));
      break;
    case 'per-vu-iterations':
      out.vus = n(shape.vus);
      out.iterations = scaleCount(shape.iterations, durationFactor);
      if (shape.maxDuration) out.maxDuration = d(shape.maxDuration);
      break;
    case 'shared-iterations':
      out.vus = n(shape.vus);
      out.iterations = scaleCount(shape.iterations, vuFactor * durationFactor);
      if (shape.maxDuration) out.maxDuration = d(shape.maxDuration);
      break;
    case 'constant-arrival-rate':
      out.rate = n(shape.rate);
      out.duration = d(shape.duration);
      out.preAllocatedVUs = n(shape.preAllocatedVUs);
      out.maxVUs = n(shape.maxVUs);
      break;
    default:
      throw new Error(`unsupported executor ${shape.executor}`);
  }
  return out;
}

export const TREND_STATS = ['avg', 'min', 'med', 'max', 'p(90)', 'p(95)', 'p(99)', 'count'];

/** k6 options for one scenario named `main` with the seed's (scaled) shape. */
export function buildOptions({ shape, thresholds, scaled = true }) {
  return {
    scenarios: { main: Object.assign({}, scaled ? scaleShape(shape) : shape, { exec: 'default' }) },
    thresholds: thresholds || {},
    summaryTrendStats: TREND_STATS,
    setupTimeout: '120s',
    teardownTimeout: '60s',
  };
}

/** Sleeps `seconds` times THINK_SCALE. */
export function think(seconds) {
  const s = seconds * THINK_SCALE;
  if (s > 0) {
    sleep(s);
  }
}

// ---------------------------------------------------------------- data files

function readJson(envName, what) {
  const file = __ENV[envName];
  if (!file) {
    throw new Error(`${envName} is not set: ${what} (the runner writes it, see loadtests/README.md)`);
  }
  return JSON.parse(open(file));
}

/** The seeded users' tokens: a SharedArray of {user_id, token}. */
export function loadTokens() {
  return new SharedArray('tokens', () => {
    if (INSPECT) {
      return [{ user_id: 1, token: 'inspect' }];
    }
    const tokens = readJson('TOKENS_FILE', 'a JSON array of {user_id, token}');
    if (!Array.isArray(tokens) || tokens.length === 0) {
      throw new Error('TOKENS_FILE must hold a non-empty JSON array of {user_id, token}');
    }
    return tokens;
  });
}

/** One list from DATA_FILE, as a SharedArray. */
export function loadList(key) {
  return new SharedArray(`data:${key}`, () => {
    if (INSPECT) {
      return [1];
    }
    const data = readJson('DATA_FILE', 'the seeded ids');
    const list = data[key];
    if (!Array.isArray(list) || list.length === 0) {
      throw new Error(`DATA_FILE has no non-empty "${key}" list`);
    }
    return list;
  });
}

/** One small value from DATA_FILE (read in the init context). */
export function loadValue(key, placeholder) {
  if (INSPECT) {
    return placeholder;
  }
  const data = readJson('DATA_FILE', 'the seeded ids');
  if (data[key] === undefined) {
    throw new Error(`DATA_FILE has no "${key}"`);
  }
  return data[key];
}

export function randomItem(list) {
  return list[Math.floor(Math.random() * list.length)];
}

export function randomInt(min, max) {
  return min + Math.floor(Math.random() * (max - min + 1));
}

// ---------------------------------------------------------------- requests

let keyCounter = 0;
/** A fresh Idempotency-Key. */
export function idempotencyKey() {
  keyCounter += 1;
  return `k6-${__VU}-${keyCounter}-${Date.now()}-${Math.random().toString(36).slice(2, 10)}`;
}

/**
 * Request parameters: JSON content type, bearer token, a `step` tag and a
 * templated `name` tag (so ids do not make one time series each), and the
 * statuses that are correct answers for this step (others count as failed).
 */
export function params({ token, step, name, expect = [200], headers = {} }) {
  const h = Object.assign({ 'Content-Type': 'application/json' }, headers);
  if (token) {
    h.Authorization = `Bearer ${token}`;
  }
  return {
    headers: h,
    tags: { step, name },
    responseCallback: http.expectedStatuses(...expect),
    timeout: '30s',
  };
}

/**
 * The error `code` of a JSON error body, or ''. Read with a path (k6 looks
 * it up in Go) rather than by building the whole body as a JS object: with
 * thousands of VUs on one core, that JS work delayed the reading of other
 * VUs' responses and counted against the service's latency.
 */
export function errorCode(res) {
  try {
    const code = res.json('code');
    return typeof code === 'string' ? code : '';
  } catch (_) {
    return '';
  }
}

/** A field of the JSON body, or undefined. */
export function field(res, path) {
  try {
    return res.json(path);
  } catch (_) {
    return undefined;
  }
}

/** Adds the response time to `trend` and returns the response. */
export function timed(trend, res) {
  trend.add(res.timings.duration);
  return res;
}

export function get(trend, path, p) {
  return timed(trend, http.get(url(path), p));
}

export function post(trend, path, body, p) {
  return timed(trend, http.post(url(path), body === null ? null : JSON.stringify(body), p));
}

export { check, sleep, http };
