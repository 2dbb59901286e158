// Schedules: every schedule with its next run and last result; enable, disable, delete
// from the list; create one below (a source's page links here with ?source=ID).
import { api } from "../api.js";
import { announce, appendAll, h, heading, statusBadge } from "../dom.js";
import { dateTime } from "../format.js";
import { t } from "../i18n.js";
import { href, navigate } from "../router.js";
import { apiErrorText, scheduleForm } from "../scheduleform.js";
import { session } from "../session.js";
import { busy, onConfirmedClick, sortableTable } from "../widgets.js";

/** When a schedule fires, as a person reads it: the preset, else the cron expression. */
export function whenText(schedule) {
  const p = schedule.preset;
  let text;
  if (!p) text = t("schedules.cronText", { cron: schedule.cron });
  else if (p.every === "weekly") text = t("schedules.presetWeekly", { weekday: t(`schedules.weekday.${p.weekday || "mon"}`), at: p.at });
  else if (p.every === "monthly") text = t("schedules.presetMonthly", { day: p.day === "last" ? t("schedules.lastDay") : p.day ?? 1, at: p.at });
  else text = t("schedules.presetDaily", { at: p.at });
  return `${text} (${schedule.timezone})`;
}

export function targetText(schedule) {
  return schedule.scope ? t("schedules.scopeText", { scope: t(`backups.scope.${schedule.scope}`) }) : schedule.source;
}

export function lastRunCell(schedule) {
  const run = schedule.last_run;
  if (!run) return t("schedules.neverRan");
  const link = run.backup_id
    ? href(`/backups/${run.backup_id}`)
    : run.group_id
      ? href("/backups", { group_id: run.group_id })
      : null;
  const badge = run.status ? statusBadge(run.status) : null;
  return h(
    "span",
    { class: "last-run" },
    badge,
    " ",
    link ? h("a", { href: link }, dateTime(run.at)) : dateTime(run.at),
    run.error ? h("span", { class: "error" }, ` ${run.error.code}: ${run.error.message}`) : null,
  );
}

/** Enable or disable, from the list or the detail page; `after` re-renders. */
export function toggleButton(schedule, after) {
  const button = h(
    "button",
    { type: "button", class: "btn small", dataset: { schedule: schedule.name }, "aria-label": t(schedule.enabled ? "schedules.disableLabel" : "schedules.enableLabel", { name: schedule.name }) },
    schedule.enabled ? t("schedules.disable") : t("schedules.enable"),
  );
  button.addEventListener("click", () =>
    busy(button, async () => {
      const action = schedule.enabled ? "disable" : "enable";
      const saved = await api.post(`/api/v1/schedules/${encodeURIComponent(schedule.id)}/${action}`);
      announce(t(saved.enabled ? "schedules.enabledNow" : "schedules.disabledNow", { name: saved.name }));
      after(saved);
    }),
  );
  return button;
}

export function deleteButton(schedule, after) {
  const button = h(
    "button",
    { type: "button", class: "btn small danger", "aria-label": t("schedules.deleteLabel", { name: schedule.name }) },
    t("common.delete"),
  );
  const dialog = {
    title: t("schedules.deleteTitle"),
    text: t("schedules.deleteText", { name: schedule.name }),
    confirmLabel: t("common.delete"),
  };
  return onConfirmedClick(button, dialog, async () => {
    try {
      await api.del(`/api/v1/schedules/${encodeURIComponent(schedule.id)}`);
    } catch (err) {
      announce(apiErrorText(err), "error");
      return;
    }
    announce(t("schedules.deleted", { name: schedule.name }));
    after();
  });
}

export async function render(ctx) {
  const { main, query } = ctx;
  const rerender = () => navigate("/schedules", Object.fromEntries(query.entries()));
  const [{ items }, sources] = await Promise.all([api.get("/api/v1/schedules"), api.get("/api/v1/sources")]);
  const wanted = query.get("source");
  const shown = wanted ? items.filter((s) => s.source_id === wanted) : items;
  const write = session.can("write");
  const columns = [
    {
      label: t("common.name"),
      key: (s) => s.name,
      cell: (s) => h("a", { href: href(`/schedules/${encodeURIComponent(s.id)}`) }, s.name),
    },
    { label: t("common.tenant"), key: (s) => s.tenant, cell: (s) => s.tenant },
    { label: t("schedules.target"), key: (s) => targetText(s), cell: (s) => targetText(s) },
    { label: t("schedules.when"), key: (s) => s.cron, cell: (s) => whenText(s) },
    {
      label: t("schedules.state"),
      key: (s) => String(s.enabled),
      cell: (s) => h("span", { class: `badge ${s.enabled ? "badge-completed" : "badge-pending"}`, dataset: { enabled: String(s.enabled) } }, s.enabled ? t("schedules.on") : t("schedules.off")),
    },
    { label: t("schedules.nextRun"), key: (s) => s.next_run || "", cell: (s) => (s.enabled ? dateTime(s.next_run) : t("common.none")) },
    { label: t("schedules.lastRun"), key: (s) => s.last_run?.at || "", cell: lastRunCell },
  ];
  if (write) {
    columns.push({
      label: t("common.actions"),
      cell: (s) =>
        h(
          "div",
          { class: "actions tight" },
          h("a", { class: "btn small", href: href(`/schedules/${encodeURIComponent(s.id)}`), "aria-label": t("schedules.editLabel", { name: s.name }) }, t("common.edit")),
          toggleButton(s, rerender),
          deleteButton(s, rerender),
        ),
    });
  }
  const source = wanted ? sources.items.find((s) => s.id === wanted) : null;
  appendAll(main, 
    heading(t("schedules.title")),
    source
      ? h("p", {}, t("schedules.forSource", { name: source.name }), " ", h("a", { href: href("/schedules") }, t("schedules.showAll")))
      : null,
    h("div", { id: "schedules-list" }, sortableTable(t("schedules.caption"), columns, shown)),
    write && sources.items.length
      ? await scheduleForm({
          sources: source ? [source, ...sources.items.filter((s) => s.id !== source.id)] : sources.items,
          onSaved: (saved) => {
            announce(t("schedules.created", { name: saved.name }));
            navigate(`/schedules/${encodeURIComponent(saved.id)}`);
          },
        })
      : null,
  );
}
