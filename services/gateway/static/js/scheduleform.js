// The schedule form, for creating (POST) and editing (PATCH): what to back up (a source,
// or a whole tenant's scope), when (a cron expression or a preset, in an IANA time
// zone), retention and a note. The API checks cron and zone; its error is shown as is.
import { api, ApiError } from "./api.js";
import { field, h, select, uid } from "./dom.js";
import { t } from "./i18n.js";
import { policyFields } from "./retention.js";
import { session, tenantChoices } from "./session.js";
import { busy } from "./widgets.js";

const SCOPES = ["all", "databases", "files"];
const EVERY = ["daily", "weekly", "monthly"];
const WEEKDAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/** The error of a refused request, with the API's stable code and what it named. */
export function apiErrorText(err) {
  if (!(err instanceof ApiError)) return String(err.message || err);
  const named = Object.entries(err.details || {})
    .map(([key, value]) => `${key}: ${Array.isArray(value) ? value.join(", ") : JSON.stringify(value)}`)
    .join("; ");
  return t("form.apiError", { code: err.code, message: err.message }) + (named ? ` (${named})` : "");
}

function zoneList(id) {
  const zones = typeof Intl.supportedValuesOf === "function" ? Intl.supportedValuesOf("timeZone") : [];
  return h("datalist", { id }, ["UTC", ...zones].map((zone) => h("option", { value: zone })));
}

function radio(name, value, label, checked) {
  return h("label", { class: "choice" }, h("input", { type: "radio", name, value, checked, id: `${name}-${value}` }), label);
}

/**
 * The form. `schedule` given: edit it (PATCH only what the form holds). `onSaved(schedule)`
 * runs after the API accepted it.
 */
export async function scheduleForm({ schedule, sources, onSaved }) {
  const editing = Boolean(schedule);
  const prefix = editing ? "edit" : "new";
  const error = h("p", { class: "error", id: `${prefix}-schedule-error`, role: "alert" });
  const name = h("input", { type: "text", name: "name", required: true, value: schedule?.name ?? "", id: `${prefix}-schedule-name` });
  let tenant = null;
  if (!editing && session.isAdmin) {
    tenant = select("tenant", (await tenantChoices()).map((x) => [x, x]));
  }
  const isScope = Boolean(schedule?.scope);
  const sourceSelect = select(
    "source",
    sources.map((s) => [s.id, `${s.name} (${s.tenant})`]),
    schedule?.source_id ?? "",
  );
  const scopeSelect = select("scope", SCOPES.map((s) => [s, t(`backups.scope.${s}`)]), schedule?.scope ?? "all");
  const targetName = `${prefix}-target`;
  const sourceBox = h("div", { hidden: isScope }, field(t("common.source"), sourceSelect));
  const scopeBox = h("div", { hidden: !isScope }, field(t("backups.scope"), scopeSelect));

  if (tenant) {
    // an admin picks the tenant first; the source list then offers that tenant's only
    if (sources[0] && [...tenant.options].some((o) => o.value === sources[0].tenant)) tenant.value = sources[0].tenant;
    const offer = () => {
      const mine = sources.filter((s) => s.tenant === tenant.value);
      sourceSelect.replaceChildren(...mine.map((s) => h("option", { value: s.id }, `${s.name} (${s.tenant})`)));
    };
    tenant.addEventListener("change", offer);
    offer();
  }
  const usePreset = Boolean(schedule?.preset);
  const whenName = `${prefix}-when`;
  const cron = h("input", { type: "text", name: "cron", value: usePreset ? "" : (schedule?.cron ?? ""), spellcheck: false, id: `${prefix}-cron`, placeholder: "30 2 * * *" });
  const every = select("every", EVERY.map((e) => [e, t(`schedules.every.${e}`)]), schedule?.preset?.every ?? "daily");
  const at = h("input", { type: "time", name: "at", value: schedule?.preset?.at ?? "02:30", id: `${prefix}-at` });
  const weekday = select("weekday", WEEKDAYS.map((d) => [d, t(`schedules.weekday.${d}`)]), schedule?.preset?.weekday ?? "mon");
  const day = select(
    "day",
    [...Array.from({ length: 28 }, (_, i) => [String(i + 1), String(i + 1)]), ["last", t("schedules.lastDay")]],
    String(schedule?.preset?.day ?? "1"),
  );
  const weekdayBox = h("div", {}, field(t("schedules.weekdayLabel"), weekday));
  const dayBox = h("div", {}, field(t("schedules.dayLabel"), day));
  const cronBox = h("div", { hidden: usePreset }, field(t("schedules.cron"), cron, t("schedules.cronHelp")));
  const presetBox = h("div", { hidden: !usePreset, class: "grid-fields" }, field(t("schedules.every"), every), field(t("schedules.at"), at), weekdayBox, dayBox);
  const listId = uid("zones");
  const timezone = h("input", { type: "text", name: "timezone", list: listId, value: schedule?.timezone ?? "UTC", spellcheck: false, id: `${prefix}-timezone` });
  const retention = policyFields(schedule?.retention, `${prefix}-schedule`);
  const note = h("input", { type: "text", name: "note", maxlength: "1000", value: schedule?.note ?? "" });
  const enabled = h("input", { type: "checkbox", name: "enabled", checked: schedule ? schedule.enabled : true, id: `${prefix}-enabled` });
  const submit = h("button", { type: "submit", class: "btn primary", id: `${prefix}-schedule-submit` }, editing ? t("common.save") : t("common.create"));

  const form = h(
    "form",
    { class: "card", id: editing ? "edit-schedule" : "create-schedule", "aria-labelledby": `${prefix}-schedule-title`, novalidate: true },
    h("h2", { id: `${prefix}-schedule-title` }, editing ? t("schedules.edit") : t("schedules.create")),
    field(t("common.name"), name),
    tenant ? field(t("common.tenant"), tenant) : null,
    h(
      "fieldset",
      {},
      h("legend", {}, t("backups.what")),
      radio(targetName, "source", t("backups.oneSource"), !isScope),
      radio(targetName, "scope", t("backups.wholeTenant"), isScope),
    ),
    sourceBox,
    scopeBox,
    h(
      "fieldset",
      {},
      h("legend", {}, t("schedules.when")),
      radio(whenName, "preset", t("schedules.usePreset"), usePreset),
      radio(whenName, "cron", t("schedules.useCron"), !usePreset),
      presetBox,
      cronBox,
      field(t("schedules.timezone"), timezone, t("schedules.timezoneHelp")),
      zoneList(listId),
    ),
    retention.fieldset,
    field(t("common.note"), note),
    h("label", { class: "choice" }, enabled, t("schedules.enabled")),
    error,
    h("div", { class: "actions" }, submit),
  );
  const sync = () => {
    const scope = form.elements[targetName].value === "scope";
    sourceBox.hidden = scope;
    scopeBox.hidden = !scope;
    const preset = form.elements[whenName].value === "preset";
    presetBox.hidden = !preset;
    cronBox.hidden = preset;
    weekdayBox.hidden = every.value !== "weekly";
    dayBox.hidden = every.value !== "monthly";
  };
  form.addEventListener("change", sync);
  sync();

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    error.textContent = "";
    for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
    const body = { name: name.value.trim(), timezone: timezone.value.trim(), note: note.value.trim() || null, enabled: enabled.checked };
    if (form.elements[targetName].value === "scope") body.scope = scopeSelect.value;
    else body.source = sourceSelect.value;
    if (form.elements[whenName].value === "preset") {
      body.preset = { every: every.value, at: at.value };
      if (every.value === "weekly") body.preset.weekday = weekday.value;
      if (every.value === "monthly") body.preset.day = day.value === "last" ? "last" : Number(day.value);
    } else {
      body.cron = cron.value.trim();
    }
    body.retention = retention.read();
    if (tenant) body.tenant = tenant.value;
    busy(submit, async () => {
      try {
        const saved = editing
          ? await api.patch(`/api/v1/schedules/${encodeURIComponent(schedule.id)}`, body)
          : await api.post("/api/v1/schedules", body);
        await onSaved(saved);
      } catch (err) {
        error.textContent = apiErrorText(err);
        const bad = Object.keys(err.details || {}).join(" ");
        const culprit = /timezone/.test(bad) ? timezone : /cron/.test(bad) ? cron : /name/.test(bad) ? name : null;
        if (culprit) {
          culprit.setAttribute("aria-invalid", "true");
          culprit.setAttribute("aria-describedby", error.id);
          culprit.focus();
        }
      }
    });
  });
  return form;
}
