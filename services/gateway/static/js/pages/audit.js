import { api } from "../api.js";
import { announce, appendAll, field, h, heading, select } from "../dom.js";
import { dateTime, dayBoundary } from "../format.js";
import { t } from "../i18n.js";
import { navigate } from "../router.js";
import { session } from "../session.js";
import { busy, formValues, pager, sortableTable } from "../widgets.js";

const OUTCOMES = ["success", "failure", "denied"];
const FILTERS = ["tenant", "action", "outcome", "since", "until", "per_page"];

export async function render(ctx) {
  const { main, query } = ctx;
  const get = (name) => query.get(name) || "";
  const filters = {};
  for (const name of FILTERS) if (query.get(name)) filters[name] = query.get(name);
  const form = h(
    "form",
    { class: "filters", role: "search", "aria-label": t("audit.filters"), id: "audit-filters" },
    session.me.tenant ? null : field(t("common.tenant"), h("input", { type: "text", name: "tenant", value: get("tenant") })),
    field(t("audit.action"), h("input", { type: "text", name: "action", value: get("action") }), t("audit.actionHelp")),
    field(
      t("audit.outcome"),
      select("outcome", [["", t("common.any")], ...OUTCOMES.map((o) => [o, t(`audit.outcome.${o}`)])], get("outcome")),
    ),
    field(t("common.since"), h("input", { type: "date", name: "since", value: get("since") })),
    field(t("common.until"), h("input", { type: "date", name: "until", value: get("until") })),
    field(t("pager.perPage"), select("per_page", ["25", "50", "100"].map((n) => [n, n]), get("per_page") || "50")),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "btn primary" }, t("common.apply"))),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    navigate("/audit", formValues(form));
  });

  const verifyResult = h("div", { id: "audit-verify-result", "aria-live": "polite" });
  const verify = h("button", { type: "button", class: "btn", id: "audit-verify" }, t("audit.verify"));
  verify.addEventListener("click", () =>
    busy(verify, async () => {
      const r = await api.get("/api/v1/audit/verify");
      const text = r.ok ? t("audit.verifyOk", { records: r.records }) : t("audit.verifyBad", { first_bad: r.first_bad, reason: r.reason });
      verifyResult.replaceChildren(h("p", { class: r.ok ? "ok" : "error", dataset: { ok: String(r.ok) } }, text));
      announce(text, r.ok ? "info" : "error");
    }),
  );

  const result = await api.get("/api/v1/audit", {
    ...filters,
    since: dayBoundary(filters.since),
    until: dayBoundary(filters.until, true),
    page: query.get("page") || 1,
  });
  const columns = [
    { label: t("audit.col.at"), key: (r) => r.at, cell: (r) => dateTime(r.at) },
    { label: t("audit.col.actor"), key: (r) => r.actor?.id, cell: (r) => `${r.actor?.type}:${r.actor?.id}` },
    { label: t("common.tenant"), key: (r) => r.tenant || "", cell: (r) => r.tenant || t("common.none") },
    { label: t("audit.action"), key: (r) => r.action, cell: (r) => h("code", {}, r.action) },
    { label: t("audit.col.resource"), key: (r) => r.resource?.id || "", cell: (r) => `${r.resource?.type}:${r.resource?.id ?? ""}` },
    {
      label: t("audit.outcome"),
      key: (r) => r.outcome,
      cell: (r) => h("span", { class: `badge outcome-${r.outcome}` }, t(`audit.outcome.${r.outcome}`)),
    },
  ];
  appendAll(main, 
    heading(t("audit.title")),
    h("div", { class: "actions" }, verify),
    verifyResult,
    form,
    sortableTable(t("audit.caption"), columns, result.items),
    pager("/audit", filters, result),
  );
}
