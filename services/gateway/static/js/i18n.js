// The message catalog: every user-facing text comes from /ui/i18n/<lang>.json.
// A catalog names its own writing direction ("$dir"), so a right-to-left language
// only needs its catalog: the layout uses logical CSS properties throughout.

const AVAILABLE = ["en"];
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

export async function loadCatalog() {
  const lang = pickLanguage();
  const resp = await fetch(`/ui/i18n/${lang}.json`);
  if (!resp.ok) throw new Error(`message catalog ${lang}: HTTP ${resp.status}`);
  messages = await resp.json();
  locale = messages["$lang"] || lang;
  document.documentElement.lang = locale;
  document.documentElement.dir = messages["$dir"] === "rtl" ? "rtl" : "ltr";
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
