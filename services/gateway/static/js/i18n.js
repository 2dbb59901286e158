// The message catalog: every user-facing text comes from /ui/i18n/<lang>.json.
// A catalog names its own writing direction ("$dir"), so a right-to-left language
// only needs its catalog: the layout uses logical CSS properties throughout.
// A catalog may be partial: a key it lacks falls back to the English text.

export const AVAILABLE = ["en", "ar"];
const FALLBACK = "en";
let messages = {};
let locale = FALLBACK;

function pickLanguage() {
  const wanted = [localStorage.getItem("coffer.lang"), ...(navigator.languages || [])];
  for (const tag of wanted) {
    if (!tag) continue;
    const base = tag.toLowerCase().split("-")[0];
    if (AVAILABLE.includes(base)) return base;
  }
  return FALLBACK;
}

async function fetchCatalog(lang) {
  const resp = await fetch(`/ui/i18n/${lang}.json`);
  if (!resp.ok) throw new Error(`message catalog ${lang}: HTTP ${resp.status}`);
  return resp.json();
}

export async function loadCatalog() {
  const lang = pickLanguage();
  const fallback = await fetchCatalog(FALLBACK);
  const chosen = lang === FALLBACK ? fallback : await fetchCatalog(lang);
  messages = { ...fallback, ...chosen };
  locale = chosen["$lang"] || lang;
  document.documentElement.lang = locale;
  document.documentElement.dir = chosen["$dir"] === "rtl" ? "rtl" : "ltr";
}

/** Switch language: remembered in this browser, applied by reloading the page. */
export function chooseLanguage(lang) {
  localStorage.setItem("coffer.lang", lang);
  window.location.reload();
}

/** The text for `key`, with `{name}` placeholders filled from `params`. */
export function t(key, params = {}) {
  const text = Object.prototype.hasOwnProperty.call(messages, key) ? messages[key] : key;
  return text.replace(/\{(\w+)\}/g, (whole, name) =>
    Object.prototype.hasOwnProperty.call(params, name) ? String(params[name]) : whole,
  );
}

export function hasText(key) {
  return Object.prototype.hasOwnProperty.call(messages, key);
}

export function currentLocale() {
  return locale;
}
