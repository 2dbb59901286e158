// Building the page from data with DOM calls only (never HTML strings), so text from the
// API can never become markup.
import { t } from "./i18n.js";

/** h("a", {href: "#/x", class: "btn"}, "text", child, ...) */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key === "class") {
      el.className = value;
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (key in el && typeof value !== "string") {
      el[key] = value;
    } else {
      el.setAttribute(key, value === true ? "" : value);
    }
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

let idCounter = 0;
export function uid(prefix = "f") {
  idCounter += 1;
  return `${prefix}-${idCounter}`;
}

/** A labelled form control; `help` becomes its description. */
export function field(labelText, control, help) {
  control.id = control.id || uid();
  const parts = [h("label", { for: control.id }, labelText), control];
  if (help) {
    const helpId = uid("help");
    control.setAttribute("aria-describedby", helpId);
    parts.push(h("p", { class: "help", id: helpId }, help));
  }
  return h("div", { class: "field" }, parts);
}

export function select(name, options, value) {
  const el = h("select", { name });
  for (const [optionValue, label] of options) {
    el.append(h("option", { value: optionValue, selected: optionValue === value }, label));
  }
  return el;
}

export function statusBadge(status, id) {
  return h("span", { class: `badge badge-${status}`, id, dataset: { status } }, t(`status.${status}`));
}

/** Say something to screen readers and sighted users alike (the aria-live region). */
let announceTimer = null;
export function announce(message, kind = "info") {
  const region = document.getElementById("status");
  clear(region);
  region.dataset.kind = kind;
  region.append(h("p", {}, message));
  clearTimeout(announceTimer);
  announceTimer = setTimeout(() => clear(region), kind === "error" ? 15000 : 8000);
}

export function heading(text, level = 1) {
  return h(`h${level}`, { tabindex: level === 1 ? "-1" : undefined }, text);
}

/** A table wrapped so that it scrolls sideways on a phone instead of the whole page. */
export function table(caption, columns, rows) {
  const head = h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)));
  return h(
    "div",
    { class: "table-wrap" },
    h("table", {}, h("caption", {}, caption), h("thead", {}, head), h("tbody", {}, rows)),
  );
}

export function emptyRow(span) {
  return h("tr", {}, h("td", { colspan: span, class: "empty" }, t("common.empty")));
}

/** A description list of [label, value] pairs. */
export function facts(pairs) {
  return h(
    "dl",
    { class: "facts" },
    pairs.map(([label, value]) => h("div", {}, h("dt", {}, label), h("dd", {}, value))),
  );
}

/**
 * A modal confirmation (<dialog>: focus is trapped and Escape cancels).
 * With `typed`, the confirm button works only once that text has been typed.
 */
export function confirmDialog({ title, text, confirmLabel, typed }) {
  return new Promise((resolve) => {
    const input = typed ? h("input", { type: "text", autocomplete: "off", spellcheck: false }) : null;
    const ok = h("button", { type: "submit", class: "btn danger", value: "ok" }, confirmLabel);
    const cancel = h("button", { type: "button", class: "btn" }, t("common.cancel"));
    const form = h(
      "form",
      { method: "dialog" },
      h("h2", {}, title),
      h("p", {}, text),
      input ? field(t("common.typeToConfirm", { name: typed }), input) : null,
      h("div", { class: "actions" }, cancel, ok),
    );
    const dialog = h("dialog", { class: "dialog", "aria-label": title }, form);
    if (input) {
      ok.disabled = true;
      input.addEventListener("input", () => {
        ok.disabled = input.value !== typed;
      });
    }
    cancel.addEventListener("click", () => dialog.close("cancel"));
    dialog.addEventListener("close", () => {
      resolve(dialog.returnValue === "ok");
      dialog.remove();
    });
    document.body.append(dialog);
    dialog.showModal();
    (input || cancel).focus();
  });
}

/** Parse a JSON object typed by the user; null with a message when it is not one. */
export function parseObject(text) {
  try {
    const value = JSON.parse(text || "{}");
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      return { error: t("common.invalidJson", { message: typeof value }) };
    }
    return { value };
  } catch (err) {
    return { error: t("common.invalidJson", { message: err.message }) };
  }
}

/** Append children, skipping null and false (the native append would print "null"). */
export function appendAll(el, ...children) {
  return append(el, children);
}
