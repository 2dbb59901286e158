// Hash routes (#/backups/ID?status=failed): every view has a URL, back and forward
// work, and the server only ever serves one page.
import { PAGES } from "./pages/index.js";

function compile(path) {
  const names = [];
  const pattern = path.replace(/:(\w+)/g, (_, name) => {
    names.push(name);
    return "([^/]+)";
  });
  return { regex: new RegExp(`^${pattern}$`), names };
}

const COMPILED = PAGES.map((page) => ({ page, ...compile(page.path) }));

/** The page, its path parameters and query for the current location hash. */
export function resolve(hash = window.location.hash) {
  const raw = hash.replace(/^#/, "") || "/";
  const [path, search = ""] = raw.split("?");
  for (const { page, regex, names } of COMPILED) {
    const match = regex.exec(path);
    if (match) {
      const params = Object.fromEntries(names.map((n, i) => [n, decodeURIComponent(match[i + 1])]));
      return { page, params, query: new URLSearchParams(search), path };
    }
  }
  return { page: null, params: {}, query: new URLSearchParams(search), path };
}

/** A link target for a path and query object (empty values left out). */
export function href(path, query = {}) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== "") search.set(key, value);
  }
  const text = search.toString();
  return `#${path}${text ? `?${text}` : ""}`;
}

export function navigate(path, query = {}) {
  const target = href(path, query);
  if (window.location.hash === target) window.dispatchEvent(new HashChangeEvent("hashchange"));
  else window.location.hash = target;
}
