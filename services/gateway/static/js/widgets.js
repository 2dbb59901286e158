// Pieces several pages share: paging, sortable columns, polling, tenant pickers.
import { announce, confirmDialog, field, h, select } from "./dom.js";
import { errorText } from "./api.js";
import { t } from "./i18n.js";
import { href } from "./router.js";
import { session, tenantChoices } from "./session.js";

/** Previous/next links for a {total, page, per_page} answer; `query` keeps the filters. */
export function pager(path, query, result) {
  const pages = Math.max(1, Math.ceil(result.total / result.per_page));
  const at = (page) => href(path, { ...query, page });
  const prev =
    result.page > 1
      ? h("a", { class: "btn", href: at(result.page - 1), rel: "prev" }, t("pager.prev"))
      : h("span", { class: "btn", "aria-disabled": "true" }, t("pager.prev"));
  const next =
    result.page < pages
      ? h("a", { class: "btn", href: at(result.page + 1), rel: "next" }, t("pager.next"))
      : h("span", { class: "btn", "aria-disabled": "true" }, t("pager.next"));
  return h(
    "nav",
    { class: "pager", "aria-label": t("pager.label") },
    prev,
    h("span", { class: "position" }, t("pager.position", { page: result.page, pages, total: result.total })),
    next,
  );
}

/**
 * A table whose column headers sort its rows (of this page: the API orders by time).
 * columns: [{label, key(row) -> sortable value, cell(row) -> node}]
 */
export function sortableTable(caption, columns, rows, emptyText = t("common.empty")) {
  let sortIndex = -1;
  let ascending = true;
  const tbody = h("tbody", {});
  const heads = columns.map((column, index) => {
    if (!column.key) return h("th", { scope: "col" }, column.label);
    const button = h(
      "button",
      { type: "button", class: "sort", "aria-label": t("common.sortBy", { column: column.label }) },
      column.label,
    );
    const th = h("th", { scope: "col", "aria-sort": "none" }, button);
    button.addEventListener("click", () => {
      ascending = sortIndex === index ? !ascending : true;
      sortIndex = index;
      for (const other of heads) other.setAttribute("aria-sort", "none");
      th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      fill();
    });
    return th;
  });
  function fill() {
    tbody.replaceChildren();
    const ordered = [...rows];
    if (sortIndex >= 0) {
      const key = columns[sortIndex].key;
      ordered.sort((a, b) => {
        const x = key(a);
        const y = key(b);
        const cmp = x === y ? 0 : x === null || x === undefined ? -1 : y === null || y === undefined ? 1 : x < y ? -1 : 1;
        return ascending ? cmp : -cmp;
      });
    }
    if (!ordered.length) {
      tbody.append(h("tr", {}, h("td", { colspan: columns.length, class: "empty" }, emptyText)));
    }
    for (const row of ordered) tbody.append(h("tr", {}, columns.map((c) => h("td", {}, c.cell(row)))));
  }
  fill();
  return h(
    "div",
    { class: "table-wrap" },
    h("table", {}, h("caption", {}, caption), h("thead", {}, h("tr", {}, heads)), tbody),
  );
}

/**
 * Call `tick` now and every `ms` until it returns false or the page is left.
 * Errors are announced once and polling carries on (a restarting gateway recovers).
 */
export function poll(ctx, tick, ms = 1000) {
  let timer = null;
  let stopped = false;
  let failed = false;
  const run = async () => {
    if (stopped || !ctx.isCurrent()) return;
    let again = true;
    try {
      again = (await tick()) !== false;
      failed = false;
    } catch (err) {
      if (!failed) announce(errorText(err), "error");
      failed = true;
    }
    if (again && !stopped && ctx.isCurrent()) timer = setTimeout(run, ms);
  };
  ctx.onLeave(() => {
    stopped = true;
    clearTimeout(timer);
  });
  run();
}

/** A tenant control: a choice for an admin, nothing for a one-tenant token. */
export async function tenantField(name, value, { any = true } = {}) {
  if (!session.isAdmin) return null;
  const tenants = await tenantChoices();
  const options = tenants.map((tenant) => [tenant, tenant]);
  if (any) options.unshift(["", t("common.any")]);
  return field(t("common.tenant"), select(name, options, value || ""));
}

/** Run an async action from a button: busy state, and the error announced. */
export async function busy(button, action) {
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    return await action();
  } catch (err) {
    announce(errorText(err), "error");
    return undefined;
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}

/**
 * Wire a destructive button: ask `dialog` first (a spec for confirmDialog, or null to
 * skip asking), then run `action` under busy(). One place, so every such button shares
 * the same confirm, busy state and error announcement.
 */
export function onConfirmedClick(button, dialog, action) {
  button.addEventListener("click", async () => {
    const spec = typeof dialog === "function" ? dialog() : dialog;
    if (spec && !(await confirmDialog(spec))) return;
    await busy(button, action);
  });
  return button;
}

/** Form values as an object, empty strings dropped. */
export function formValues(form) {
  const out = {};
  for (const [key, value] of new FormData(form).entries()) {
    if (value !== "") out[key] = value;
  }
  return out;
}

export const DRIVER_TEMPLATES = {
  filesystem: { path: "" },
  sql: { url: "" },
  postgres: { url: "", schemas: [] },
  s3: { endpoint: "", bucket: "", prefix: "", access_key: "", secret_key: "", secure: false },
};

/**
 * A table ordered by the API (`sort` = a field, `-field` descending): each sortable
 * header is a link to the same list sorted by that column, so the order covers every
 * page, not just the one shown. columns: [{label, sort?, cell(row)}]
 */
export function serverSortedTable(caption, columns, rows, { path, query, sort }) {
  const current = sort.replace(/^-/, "");
  const descending = sort.startsWith("-");
  const heads = columns.map((column) => {
    if (!column.sort) return h("th", { scope: "col" }, column.label);
    const active = column.sort === current;
    const next = active && !descending ? `-${column.sort}` : column.sort;
    return h(
      "th",
      { scope: "col", "aria-sort": active ? (descending ? "descending" : "ascending") : "none" },
      h(
        "a",
        { class: "sort", href: href(path, { ...query, sort: next, page: undefined }), dataset: { sort: column.sort }, "aria-label": t("common.sortBy", { column: column.label }) },
        column.label,
      ),
    );
  });
  const body = rows.length
    ? rows.map((row) => h("tr", {}, columns.map((c) => h("td", {}, c.cell(row)))))
    : h("tr", {}, h("td", { colspan: columns.length, class: "empty" }, t("common.empty")));
  return h(
    "div",
    { class: "table-wrap" },
    h("table", { id: "backups-table" }, h("caption", {}, caption), h("thead", {}, h("tr", {}, heads)), h("tbody", {}, body)),
  );
}
