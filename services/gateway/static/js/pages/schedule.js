// One schedule: what it backs up and when, its next run and last result, enable or
// disable, edit, delete, and the preview of what its retention policy would remove.
import { api } from "../api.js";
import { announce, appendAll, facts, h, heading } from "../dom.js";
import { dateTime } from "../format.js";
import { t } from "../i18n.js";
import { href, navigate } from "../router.js";
import { policyText, previewTable } from "../retention.js";
import { apiErrorText, scheduleForm } from "../scheduleform.js";
import { session } from "../session.js";
import { busy } from "../widgets.js";
import { deleteButton, lastRunCell, targetText, toggleButton, whenText } from "./schedules.js";

export async function render(ctx) {
  const { main, params } = ctx;
  const schedule = await api.get(`/api/v1/schedules/${encodeURIComponent(params.id)}`);
  const reload = () => navigate(`/schedules/${encodeURIComponent(schedule.id)}`);
  const write = session.can("write");
  const actions = write
    ? h(
        "div",
        { class: "actions", id: "schedule-actions" },
        toggleButton(schedule, reload),
        deleteButton(schedule, () => navigate("/schedules")),
      )
    : null;
  const previewBox = h("div", { id: "schedule-preview-box", "aria-live": "polite" });
  const preview = h("button", { type: "button", class: "btn", id: "schedule-preview" }, t("retention.preview"));
  preview.addEventListener("click", () =>
    busy(preview, async () => {
      try {
        previewBox.replaceChildren(await previewTable({ schedule: schedule.id }, null));
      } catch (err) {
        previewBox.replaceChildren(h("p", { class: "error", role: "alert" }, apiErrorText(err)));
      }
    }),
  );
  const sources = write ? (await api.get("/api/v1/sources", { tenant: session.isAdmin ? schedule.tenant : undefined })).items : [];
  appendAll(main, 
    heading(t("schedule.title", { name: schedule.name })),
    h(
      "section",
      { class: "card", id: "schedule-summary" },
      facts([
        [t("common.tenant"), schedule.tenant],
        [t("schedules.target"), schedule.source_id ? h("a", { href: href(`/sources/${schedule.source_id}`) }, targetText(schedule)) : targetText(schedule)],
        [t("schedules.when"), whenText(schedule)],
        [t("schedules.cron"), h("code", {}, schedule.cron)],
        [t("schedules.state"), h("span", { id: "schedule-state", dataset: { enabled: String(schedule.enabled) } }, schedule.enabled ? t("schedules.on") : t("schedules.off"))],
        [t("schedules.nextRun"), h("span", { id: "schedule-next" }, schedule.enabled ? dateTime(schedule.next_run) : t("common.none"))],
        [t("schedules.lastRun"), lastRunCell(schedule)],
        [t("retention.title"), policyText(schedule.retention)],
        [t("common.note"), schedule.note || t("common.none")],
        [t("schedule.createdBy"), schedule.created_by || t("common.none")],
      ]),
      actions,
    ),
    schedule.retention
      ? h("section", { class: "card", "aria-labelledby": "schedule-preview-title" }, h("h2", { id: "schedule-preview-title" }, t("retention.previewTitle")), h("div", { class: "actions" }, preview), previewBox)
      : null,
    write
      ? await scheduleForm({
          schedule,
          sources,
          onSaved: (saved) => {
            announce(t("schedules.saved", { name: saved.name }));
            navigate(`/schedules/${encodeURIComponent(saved.id)}`);
          },
        })
      : null,
  );
}
