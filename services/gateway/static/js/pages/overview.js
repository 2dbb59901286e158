import { api } from "../api.js";
import { h, heading } from "../dom.js";
import { bytes, number, percent, relative } from "../format.js";
import { t } from "../i18n.js";
import { href } from "../router.js";
import { poll } from "../widgets.js";

/** A source whose last success is older than this is listed as needing attention. */
const STALE_HOURS = 24;
const STATUSES = ["pending", "running", "completed", "failed", "cancelled"];

function card(id, title, value, detail) {
  return h(
    "section",
    { class: "card stat", id, "aria-labelledby": `${id}-title` },
    h("h2", { id: `${id}-title` }, title),
    h("p", { class: "value" }, value),
    detail ? h("div", { class: "detail" }, detail) : null,
  );
}

export async function render(ctx) {
  const { main } = ctx;
  const grid = h("div", { class: "cards", id: "overview-cards" });
  main.append(heading(t("overview.title")), grid);

  async function refresh() {
    const [stats, sources] = await Promise.all([api.get("/api/v1/stats"), api.get("/api/v1/sources")]);
    const counts = stats.backups.by_status;
    const byStatus = h(
      "ul",
      { class: "status-list" },
      STATUSES.map((status) =>
        h(
          "li",
          {},
          h("a", { href: href("/backups", { status }) }, h("span", { class: `badge badge-${status}` }, t(`status.${status}`))),
          " ",
          h("span", { dataset: { count: status } }, number(counts[status] || 0)),
        ),
      ),
    );
    const seen = new Map(stats.sources.map((s) => [s.source_id, s]));
    const stale = [
      ...stats.sources.filter((s) => s.age_seconds > STALE_HOURS * 3600),
      ...sources.items
        .filter((s) => !seen.has(s.id))
        .map((s) => ({ source_id: s.id, source: s.name, tenant: s.tenant, age_seconds: null })),
    ];
    const staleList = stale.length
      ? h(
          "ul",
          { class: "stale-list" },
          stale.map((s) =>
            h(
              "li",
              {},
              h("a", { href: href(`/sources/${encodeURIComponent(s.source_id)}`) }, s.source),
              ` (${s.tenant}) · `,
              s.age_seconds === null ? t("overview.never") : t("overview.lastSuccess", { when: relative(s.age_seconds) }),
            ),
          ),
        )
      : h("p", {}, t("overview.staleNone"));
    grid.replaceChildren(
      card("card-status", t("overview.byStatus"), t("overview.total", { count: number(stats.backups.total) }), byStatus),
      card("card-success", t("overview.successRate"), percent(stats.success_rate), t("overview.successHelp")),
      card(
        "card-bytes",
        t("overview.stored"),
        bytes(stats.bytes.repository ?? stats.bytes.stored),
        t("overview.storedHelp", { logical: bytes(stats.bytes.logical), repository: bytes(stats.bytes.repository) }),
      ),
      card(
        "card-dedup",
        t("overview.dedup"),
        stats.bytes.dedup_ratio === null ? t("common.none") : `${number(stats.bytes.dedup_ratio, 2)}×`,
        t("overview.dedupHelp"),
      ),
      card(
        "card-running",
        t("overview.running"),
        h("a", { href: href("/backups", { status: "running" }) }, number(counts.running + counts.pending)),
        t("overview.runningHelp", { running: number(counts.running), pending: number(counts.pending) }),
      ),
      card("card-stale", t("overview.stale"), number(stale.length), [
        h("p", {}, t("overview.staleHelp", { hours: STALE_HOURS })),
        staleList,
      ]),
    );
  }
  poll(ctx, refresh, 5000);
}
