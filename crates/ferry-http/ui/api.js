// The management API client: basic auth from sessionStorage, JSON in and out.
//
// fetch runs with credentials 'omit' and an explicit Authorization header:
// the browser then never pops its own basic-auth dialog on a 401, and the
// page shows its login form instead.

const KEY = 'ferry.auth';

/** An API error: HTTP status plus RabbitMQ's {error, reason}. */
export class ApiError extends Error {
  constructor(status, error, reason) {
    super(reason || error || `HTTP ${status}`);
    this.status = status;
    this.error = error;
  }

  /** Wrong or missing credentials (as opposed to a missing tag/permission). */
  get loginFailed() {
    return this.status === 401 && this.error !== 'not_authorised';
  }
}

export function session() {
  try {
    return JSON.parse(sessionStorage.getItem(KEY) || 'null');
  } catch {
    return null;
  }
}

export function saveSession(user, token, tags) {
  sessionStorage.setItem(KEY, JSON.stringify({ user, token, tags }));
}

export function clearSession() {
  sessionStorage.removeItem(KEY);
}

/** Basic credentials, UTF-8 safe. */
export function basicToken(user, password) {
  const raw = new TextEncoder().encode(`${user}:${password}`);
  return btoa(String.fromCharCode(...raw));
}

/** Listeners told when the credentials stop working. */
const onLogout = [];
export function whenLoggedOut(fn) {
  onLogout.push(fn);
}

/** One path segment (vhost "/" -> "%2F"). */
export const seg = encodeURIComponent;

/**
 * Calls the API. `path` starts with /api/. Resolves the parsed JSON (null
 * for an empty body); rejects with ApiError. A failed login clears the
 * session and tells the listeners.
 */
export async function call(method, path, body, { token, headers = {} } = {}) {
  const auth = token || session()?.token;
  const init = {
    method,
    credentials: 'omit',
    cache: 'no-store',
    headers: { Accept: 'application/json', ...headers },
  };
  if (auth) init.headers.Authorization = `Basic ${auth}`;
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, 'network', `cannot reach Ferry: ${e.message}`);
  }
  const text = await resp.text();
  let data = null;
  if (text.trim()) {
    try {
      data = JSON.parse(text);
    } catch {
      data = { reason: text.slice(0, 200) };
    }
  }
  if (!resp.ok) {
    const err = new ApiError(resp.status, data?.error, data?.reason);
    if (err.loginFailed && !token) {
      clearSession();
      onLogout.forEach((fn) => fn(err.message));
    }
    throw err;
  }
  return data;
}

export const get = (path) => call('GET', path);
