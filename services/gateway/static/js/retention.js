// Retention policies (restic's forget rules) as form fields, and the preview of what a
// policy would keep, with its reasons, and remove: shared by sources and schedules.
import { api } from "./api.js";
import { field, h } from "./dom.js";
import { dateTime } from "./format.js";
import { t } from "./i18n.js";
import { href } from "./router.js";

const COUNTS = ["keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly"];
const TEXTS = ["keep_within", "max_age", "timezone"];

/** A fieldset with one control per rule; `read()` gives the policy, or null when empty. */
export function policyFields(policy, prefix) {
  const controls = {};
  for (const name of COUNTS) {
    controls[name] = h("input", { type: "number", min: "0", step: "1", inputmode: "numeric", name, id: `${prefix}-${name}`, value: policy?.[name] ?? "" });
  }
  for (const name of TEXTS) {
    controls[name] = h("input", { type: "text", name, id: `${prefix}-${name}`, value: policy?.[name] ?? "", spellcheck: false });
  }
  const fieldset = h(
    "fieldset",
    { class: "grid-fields", id: `${prefix}-policy` },
    h("legend", {}, t("retention.rules")),
    COUNTS.map((name) => field(t(`retention.${name}`), controls[name])),
    field(t("retention.keep_within"), controls.keep_within, t("retention.durationHelp")),
    field(t("retention.max_age"), controls.max_age, t("retention.durationHelp")),
    field(t("retention.timezone"), controls.timezone, t("retention.timezoneHelp")),
  );
  function read() {
    const out = {};
    for (const name of COUNTS) if (controls[name].value !== "") out[name] = Number(controls[name].value);
    for (const name of TEXTS) if (controls[name].value.trim()) out[name] = controls[name].value.trim();
    return Object.keys(out).length ? out : null;
  }
  return { fieldset, read };
}

/** A policy in one line: "last 3 · daily 7". */
export function policyText(policy) {
  if (!policy) return t("retention.none");
  const parts = [];
  for (const name of [...COUNTS, ...TEXTS]) {
    if (policy[name] !== null && policy[name] !== undefined) parts.push(`${t(`retention.${name}`)}: ${policy[name]}`);
  }
  return parts.length ? parts.join(" · ") : t("retention.none");
}

/** POST /api/v1/retention/preview and show every backup with its verdict and reasons. */
export async function previewTable(target, policy) {
  const body = { ...target };
  if (policy) body.policy = policy;
  const result = await api.post("/api/v1/retention/preview", body);
  const rows = [
    ...result.keep.map((b) => ({ ...b, kept: true })),
    ...result.delete.map((b) => ({ ...b, kept: false })),
  ].sort((a, b) => (a.created_at < b.created_at ? 1 : a.created_at > b.created_at ? -1 : 0));
  return h(
    "div",
    { class: "table-wrap", id: "retention-preview" },
    h(
      "table",
      {},
      h("caption", {}, t("retention.previewCaption", { keep: result.keep.length, remove: result.delete.length })),
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          h("th", { scope: "col" }, t("backups.col.created")),
          h("th", { scope: "col" }, t("retention.verdict")),
          h("th", { scope: "col" }, t("retention.reasons")),
        ),
      ),
      h(
        "tbody",
        {},
        rows.length
          ? rows.map((b) =>
              h(
                "tr",
                { dataset: { backup: b.id, verdict: b.kept ? "keep" : "remove" } },
                h("td", {}, h("a", { href: href(`/backups/${b.id}`) }, dateTime(b.created_at))),
                h("td", {}, h("span", { class: `badge verdict-${b.kept ? "keep" : "remove"}` }, b.kept ? t("retention.kept") : t("retention.removed"))),
                h("td", {}, b.kept ? (b.reasons || []).join(", ") : t("retention.noRule")),
              ),
            )
          : h("tr", {}, h("td", { colspan: 3, class: "empty" }, t("common.empty"))),
      ),
    ),
  );
}
