import { api } from "../api.js";
import { appendAll, h, heading } from "../dom.js";
import { bytes, duration, number, percent, relative } from "../format.js";
import { t } from "../i18n.js";
import { href } from "../router.js";
import { poll } from "../widgets.js";

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
  appendAll(main, heading(t("overview.title")), grid);

  async function refresh() {
    const stats = await api.get("/api/v1/stats");
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
    // Overdue is the API's verdict: the last good backup (or, never backed up, the
    // schedule's creation) is older than the RPO its schedules promise, plus slack.
    const overdue = stats.sources.filter((s) => s.overdue);
    const unscheduled = stats.sources.filter((s) => s.rpo_promise_seconds === null);
    const overdueList = overdue.length
      ? h(
          "ul",
          { class: "stale-list", id: "overdue-list" },
          overdue.map((s) =>
            h(
              "li",
              { dataset: { source: s.source } },
              h("a", { href: href(`/sources/${encodeURIComponent(s.source_id)}`) }, s.source),
              ` (${s.tenant}) · `,
              s.age_seconds === null ? t("overview.never") : t("overview.lastSuccess", { when: relative(s.age_seconds) }),
              " · ",
              t("overview.promise", { rpo: duration(s.rpo_promise_seconds) }),
            ),
          ),
        )
      : h("p", {}, t("overview.overdueNone"));
    const runningList = stats.running.length
      ? h(
          "ul",
          { class: "stale-list", id: "running-list" },
          stats.running.map((job) =>
            h(
              "li",
              {},
              h("a", { href: href(job.kind === "backup" ? `/backups/${job.id}` : `/restores/${job.id}`) }, `${t(`overview.kind.${job.kind}`)} ${job.source}`),
              " · ",
              percent((job.progress?.percent ?? 0) / 100),
            ),
          ),
        )
      : null;
    const rates = stats.success_rates || {};
    grid.replaceChildren(
      card("card-status", t("overview.byStatus"), t("overview.total", { count: number(stats.backups.total) }), byStatus),
      card("card-success", t("overview.successRate"), percent(stats.success_rate), [
        h("p", {}, t("overview.successHelp")),
        h("p", {}, t("overview.successWindows", { week: percent(rates["7d"]), month: percent(rates["30d"]) })),
      ]),
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
        [h("p", {}, t("overview.runningHelp", { running: number(counts.running), pending: number(counts.pending) })), runningList],
      ),
      card("card-overdue", t("overview.overdue"), h("span", { id: "overdue-count" }, number(overdue.length)), [
        h("p", {}, t("overview.overdueHelp")),
        overdueList,
        unscheduled.length ? h("p", { class: "help" }, t("overview.unscheduled", { count: number(unscheduled.length) })) : null,
      ]),
    );
  }
  poll(ctx, refresh, 5000);
}
