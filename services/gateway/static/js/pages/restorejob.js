// One restore job: status, live progress with rate and time left, its log, its report,
// and cancel while it is pending or running.
import { facts, h, statusBadge } from "../dom.js";
import { dateTime, number } from "../format.js";
import { t } from "../i18n.js";
import { ACTIVE, cancelButton, jobDetailPage } from "../jobs.js";
import { href } from "../router.js";
import { session } from "../session.js";
import { reportView } from "./restore.js";

function summaryCard(restore, refresh) {
  const actions = h("div", { class: "actions", id: "restore-actions" });
  if (session.can("write") && ACTIVE.includes(restore.status)) actions.append(cancelButton("restore", restore, refresh));
  return h(
    "section",
    { class: "card", "aria-labelledby": "restore-summary-title" },
    h("h2", { id: "restore-summary-title", class: "visually-hidden" }, t("restoreJob.title", { id: restore.id })),
    h("p", { class: "status-line" }, statusBadge(restore.status, "restore-status")),
    facts([
      [t("restoreJob.backup"), h("a", { href: href(`/backups/${restore.backup_id}`) }, restore.backup_id)],
      [t("common.source"), restore.source],
      [t("common.tenant"), restore.tenant],
      [t("restore.mode"), t(`restore.mode.${restore.mode}`)],
      [t("restore.target"), restore.in_place ? t("restore.original", { source: restore.source }) : JSON.stringify(restore.target)],
      [t("restore.include"), restore.include?.length ? restore.include.join(", ") : t("restore.everything")],
      [t("backup.requestedBy"), restore.requested_by || t("common.none")],
      [t("common.created"), dateTime(restore.created_at)],
      [t("backup.startedAt"), dateTime(restore.started_at)],
      [t("backup.finishedAt"), dateTime(restore.finished_at)],
      [t("backup.attempts"), number(restore.attempts)],
      ...(restore.error ? [[t("backup.error"), `${restore.error.code}: ${restore.error.message}`]] : []),
    ]),
    actions,
  );
}

export async function render(ctx) {
  jobDetailPage(ctx, {
    kind: "restore",
    title: t("restoreJob.title", { id: ctx.params.id }),
    summary: summaryCard,
    sections: async (restore) => [reportView(restore.report)],
  });
}
