import { api } from "../api.js";
import { announce, appendAll, field, h, heading, select } from "../dom.js";
import { bytes, dateTime, dayBoundary } from "../format.js";
import { t } from "../i18n.js";
import { href, navigate } from "../router.js";
import { session } from "../session.js";
import { busy, formValues, pager, serverSortedTable, tenantField } from "../widgets.js";

const STATUSES = ["pending", "running", "completed", "failed", "cancelled"];
const FILTERS = ["q", "tenant", "source", "status", "kind", "since", "until", "group_id", "per_page", "sort"];
const KINDS = ["files", "database", "bucket"];

function filterForm(query, sources, tenantControl) {
  const get = (name) => query.get(name) || "";
  const form = h(
    "form",
    { class: "filters", role: "search", "aria-label": t("backups.filters"), id: "backup-filters" },
    field(t("common.search"), h("input", { type: "search", name: "q", value: get("q") }), t("backups.searchHelp")),
    tenantControl,
    field(
      t("common.source"),
      select("source", [["", t("common.any")], ...sources.map((s) => [s.name, `${s.name} (${s.tenant})`])], get("source")),
    ),
    field(
      t("common.status"),
      select("status", [["", t("common.any")], ...STATUSES.map((s) => [s, t(`status.${s}`)])], get("status")),
    ),
    field(
      t("backups.kind"),
      select("kind", [["", t("common.any")], ...KINDS.map((k) => [k, t(`backups.kind.${k}`)])], get("kind")),
    ),
    field(t("common.since"), h("input", { type: "date", name: "since", value: get("since") })),
    field(t("common.until"), h("input", { type: "date", name: "until", value: get("until") })),
    field(t("pager.perPage"), select("per_page", ["25", "50", "100"].map((n) => [n, n]), get("per_page") || "50")),
    get("sort") ? h("input", { type: "hidden", name: "sort", value: get("sort") }) : null,
    h(
      "div",
      { class: "actions" },
      h("button", { type: "submit", class: "btn primary" }, t("common.apply")),
      h("a", { class: "btn", href: href("/backups") }, t("common.reset")),
    ),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    navigate("/backups", formValues(form));
  });
  return form;
}

async function createForm(sources) {
  const sourceSelect = select("source", sources.map((s) => [s.id, `${s.name} (${s.tenant})`]));
  const scopeSelect = select(
    "scope",
    ["all", "databases", "files"].map((s) => [s, t(`backups.scope.${s}`)]),
  );
  const tenantControl = await tenantField("tenant", "", { any: false });
  const kind = (value, label, checked) =>
    h("label", { class: "choice" }, h("input", { type: "radio", name: "kind", value, checked }), label);
  const oneSource = h("div", { class: "when-source" }, field(t("common.source"), sourceSelect));
  const wholeTenant = h("div", { class: "when-tenant", hidden: true }, field(t("backups.scope"), scopeSelect), tenantControl);
  const submit = h("button", { type: "submit", class: "btn primary", id: "start-backup" }, t("backups.start"));
  const form = h(
    "form",
    { class: "card", id: "create-backup", "aria-labelledby": "create-backup-title" },
    h("h2", { id: "create-backup-title" }, t("backups.create")),
    h(
      "fieldset",
      {},
      h("legend", {}, t("backups.what")),
      kind("source", t("backups.oneSource"), true),
      kind("tenant", t("backups.wholeTenant"), false),
    ),
    oneSource,
    wholeTenant,
    field(t("common.note"), h("input", { type: "text", name: "note", maxlength: "1000" })),
    h("div", { class: "actions" }, submit),
  );
  form.addEventListener("change", () => {
    const whole = form.elements.kind.value === "tenant";
    oneSource.hidden = whole;
    wholeTenant.hidden = !whole;
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(submit, async () => {
      const values = formValues(form);
      const body = { note: values.note || null };
      if (values.kind === "tenant") {
        body.scope = values.scope;
        if (values.tenant) body.tenant = values.tenant;
        const group = await api.post("/api/v1/backups", body);
        announce(t("backups.groupStarted", { count: group.items.length }));
        navigate("/backups", { group_id: group.group_id });
      } else {
        body.source = values.source;
        const backup = await api.post("/api/v1/backups", body);
        announce(t("backups.started", { id: backup.id }));
        navigate(`/backups/${backup.id}`);
      }
    });
  });
  return form;
}

export async function render(ctx) {
  const { main, query } = ctx;
  const sources = (await api.get("/api/v1/sources")).items;
  const filters = {};
  for (const name of FILTERS) if (query.get(name)) filters[name] = query.get(name);
  const result = await api.get("/api/v1/backups", {
    ...filters,
    since: dayBoundary(filters.since),
    until: dayBoundary(filters.until, true),
    page: query.get("page") || 1,
  });
  const columns = [
    {
      label: t("backups.col.created"),
      sort: "created_at",
      cell: (b) => h("a", { href: href(`/backups/${b.id}`) }, dateTime(b.created_at)),
    },
    { label: t("backups.col.source"), sort: "source", cell: (b) => b.source },
    { label: t("backups.col.tenant"), cell: (b) => b.tenant },
    {
      label: t("backups.col.status"),
      sort: "status",
      cell: (b) => [
        h("span", { class: `badge badge-${b.status}` }, t(`status.${b.status}`)),
        b.legal_hold ? [" ", h("span", { class: "badge badge-hold", dataset: { hold: b.id } }, t("hold.badge"))] : null,
      ],
    },
    { label: t("backups.col.finished"), sort: "finished_at", cell: (b) => dateTime(b.finished_at) },
    { label: t("backups.col.logical"), sort: "size", cell: (b) => bytes(b.size?.logical) },
    { label: t("backups.col.size"), sort: "stored", cell: (b) => bytes(b.size?.stored) },
    { label: t("backups.col.note"), cell: (b) => b.note || "" },
  ];
  appendAll(main, 
    heading(t("backups.title")),
    session.can("write") && sources.length ? await createForm(sources) : null,
    filterForm(query, sources, await tenantField("tenant", query.get("tenant"))),
    serverSortedTable(t("backups.caption"), columns, result.items, { path: "/backups", query: filters, sort: filters.sort || "-created_at" }),
    pager("/backups", filters, result),
  );
}
