// The JSON API, with the signed-in token. Errors keep the API's stable code.
import { t } from "./i18n.js";

const TOKEN_KEY = "coffer.token";

export class ApiError extends Error {
  constructor(status, error) {
    super(error?.message || `HTTP ${status}`);
    this.status = status;
    this.code = error?.code || "http_error";
    this.details = error?.details || {};
  }
}

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

let onUnauthenticated = () => {};
export function whenUnauthenticated(handler) {
  onUnauthenticated = handler;
}

function url(path, query) {
  const u = new URL(path, window.location.origin);
  for (const [key, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "") u.searchParams.set(key, value);
  }
  return u.pathname + u.search;
}

async function send(method, path, { body, query, token } = {}) {
  const headers = { Accept: "application/json" };
  const bearer = token ?? getToken();
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(url(path, query), {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "omit",
    cache: "no-store",
  });
  if (resp.status === 401 && token === undefined) onUnauthenticated();
  return resp;
}

export async function request(method, path, options = {}) {
  const resp = await send(method, path, options);
  const text = await resp.text();
  let payload = null;
  try {
    payload = text ? JSON.parse(text) : null;
  } catch {
    payload = null;
  }
  if (!resp.ok) throw new ApiError(resp.status, payload?.error);
  return payload;
}

export const api = {
  get: (path, query) => request("GET", path, { query }),
  post: (path, body) => request("POST", path, { body }),
  patch: (path, body) => request("PATCH", path, { body }),
  del: (path) => request("DELETE", path),
};

/**
 * Download an API resource as a file. A link cannot carry the bearer token, so the
 * bytes are fetched and handed to the browser as a blob (held in memory: fine for
 * exports and modest backups; the CLI streams large ones to disk).
 */
export async function download(path, fallbackName) {
  const resp = await send("GET", path);
  if (!resp.ok) {
    let error = null;
    try {
      error = (await resp.json()).error;
    } catch {
      error = null;
    }
    throw new ApiError(resp.status, error);
  }
  const disposition = resp.headers.get("Content-Disposition") || "";
  const match = /filename="([^"]+)"/.exec(disposition);
  const name = match ? match[1] : fallbackName;
  const blob = await resp.blob();
  const href = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = href;
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(href), 60_000);
  return name;
}

export function errorText(err) {
  return t("app.error", { message: err.message || String(err) });
}
