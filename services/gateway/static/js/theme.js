// Light and dark: the system's choice (prefers-color-scheme) until the user picks one.
import { h } from "./dom.js";
import { t } from "./i18n.js";

const KEY = "coffer.theme";
const media = window.matchMedia("(prefers-color-scheme: dark)");

function current() {
  return localStorage.getItem(KEY) || (media.matches ? "dark" : "light");
}

function apply(theme) {
  document.documentElement.dataset.theme = theme;
}

export function initTheme() {
  apply(current());
  media.addEventListener("change", () => {
    if (!localStorage.getItem(KEY)) apply(current());
  });
}

export function themeToggle() {
  const button = h("button", { type: "button", class: "btn", id: "theme-toggle" }, t("theme.dark"));
  const sync = () => button.setAttribute("aria-pressed", String(current() === "dark"));
  button.addEventListener("click", () => {
    const next = current() === "dark" ? "light" : "dark";
    localStorage.setItem(KEY, next);
    apply(next);
    sync();
  });
  sync();
  return button;
}
