// The restore flow, one step at a time: backup, target, mode and contents, review.
import { api, errorText } from "../api.js";
import { announce, appendAll, facts, field, h, heading, parseObject, select, statusBadge } from "../dom.js";
import { dateTime, number, percent } from "../format.js";
import { t } from "../i18n.js";
import { href } from "../router.js";
import { busy, DRIVER_TEMPLATES, poll } from "../widgets.js";

const STEPS = ["restore.step1", "restore.step2", "restore.step3", "restore.step4"];
const MODES = ["dry-run", "merge", "replace"];
const ACTIVE = ["pending", "running"];

function changeRows(report) {
  const changes = report.changes;
  return ["create", "update", "delete"].map((action) => {
    const items = changes[action] || [];
    return h(
      "tr",
      { dataset: { action } },
      h("th", { scope: "row" }, t(`restore.changes.${action}`)),
      h("td", {}, number(changes[`${action}_count`] ?? items.length)),
      h("td", {}, items.length ? h("ul", { class: "plain" }, items.map((item) => h("li", {}, typeof item === "string" ? item : JSON.stringify(item)))) : t("common.none")),
    );
  });
}

/** A restore's report: the changes (dry run), per-table counts (databases), and the raw JSON. */
export function reportView(report) {
  if (!report) return null;
  const parts = [];
  if (report.changes) {
    parts.push(
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { id: "restore-changes" },
          h("caption", {}, t("restore.changesCaption")),
          h("tbody", {}, changeRows(report)),
        ),
      ),
    );
  }
  if (report.tables && typeof report.tables === "object") {
    const names = Object.keys(report.tables);
    const keys = [...new Set(names.flatMap((n) => Object.keys(report.tables[n])))];
    parts.push(
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          {},
          h("caption", {}, t("backup.tablesCaption")),
          h("thead", {}, h("tr", {}, h("th", { scope: "col" }, t("source.table")), keys.map((k) => h("th", { scope: "col" }, k)))),
          h("tbody", {}, names.map((n) => h("tr", {}, h("th", { scope: "row" }, n), keys.map((k) => h("td", {}, number(report.tables[n][k])))))),
        ),
      ),
    );
  }
  parts.push(h("details", {}, h("summary", {}, t("restore.report")), h("pre", { class: "json" }, JSON.stringify(report, null, 2))));
  return h("div", { class: "report", id: "restore-report" }, parts);
}

export async function render(ctx) {
  const { main, query } = ctx;
  const backups = (await api.get("/api/v1/backups", { status: "completed", per_page: 100 })).items;
  const wanted = query.get("backup");
  if (wanted && !backups.some((b) => b.id === wanted)) {
    try {
      backups.unshift(await api.get(`/api/v1/backups/${encodeURIComponent(wanted)}`));
    } catch (err) {
      announce(errorText(err), "error");
    }
  }
  appendAll(main, heading(t("restore.title")));
  if (!backups.length) {
    appendAll(main, h("p", {}, t("restore.noBackups")));
    return;
  }

  const state = { step: 0, backup: backups.find((b) => b.id === wanted) || backups[0], tables: null };
  const stepList = h(
    "ol",
    { class: "steps", "aria-label": t("restore.steps") },
    STEPS.map((key, i) => h("li", { dataset: { step: String(i) } }, t(key))),
  );
  const panel = h("div", { class: "card step-panel", id: "restore-step" });
  const result = h("section", { id: "restore-result", "aria-live": "polite" });
  appendAll(main, stepList, panel, result);

  // -- the controls of every step, kept across steps so going back keeps the answers
  const backupSelect = select(
    "backup",
    backups.map((b) => [b.id, t("restore.backupOption", { source: b.source, created: dateTime(b.created_at), id: b.id })]),
    state.backup.id,
  );
  backupSelect.id = "restore-backup";
  const targetJson = h("textarea", { name: "target", rows: "6", spellcheck: false, id: "restore-target" });
  const targetError = h("p", { class: "error", id: "target-error" });
  const targetBox = h("div", { hidden: true }, field(t("restore.targetJson", { driver: "" }), targetJson), targetError);
  const targetRadios = ["original", "other"].map((value) =>
    h("input", { type: "radio", name: "target-kind", value, checked: value === "original", id: `target-${value}` }),
  );
  const modeRadios = MODES.map((mode) =>
    h("input", { type: "radio", name: "mode", value: mode, checked: mode === "dry-run", id: `mode-${mode}` }),
  );
  const includePaths = h("textarea", { name: "include", rows: "4", spellcheck: false, id: "restore-include" });
  let tableBoxes = [];
  const confirmInput = h("input", { type: "text", name: "confirm", autocomplete: "off", spellcheck: false, id: "restore-confirm" });

  const mode = () => modeRadios.find((r) => r.checked).value;
  const otherTarget = () => targetRadios[1].checked;
  const include = () => {
    if (state.backup.driver === "sql") return tableBoxes.filter((b) => b.checked).map((b) => b.value);
    return includePaths.value.split("\n").map((s) => s.trim()).filter(Boolean);
  };

  backupSelect.addEventListener("change", () => {
    state.backup = backups.find((b) => b.id === backupSelect.value);
    state.tables = null;
    targetJson.value = "";
  });
  for (const radio of targetRadios) {
    radio.addEventListener("change", () => {
      targetBox.hidden = !otherTarget();
    });
  }

  async function loadTables() {
    if (state.backup.driver !== "sql" || state.tables) return;
    try {
      state.tables = (await api.get(`/api/v1/backups/${state.backup.id}/tables`)).items;
    } catch (err) {
      state.tables = [];
      announce(errorText(err), "error");
    }
    tableBoxes = state.tables.map((table) => h("input", { type: "checkbox", name: "tables", value: table.name }));
  }

  function nav(nextLabel) {
    const back = h("button", { type: "button", class: "btn", id: "step-back" }, t("common.back"));
    back.addEventListener("click", () => show(state.step - 1));
    const next = h("button", { type: "submit", class: "btn primary", id: "step-next" }, nextLabel);
    return h("div", { class: "actions" }, state.step > 0 ? back : null, next);
  }

  const stepViews = [
    () => h("div", {}, h("h2", {}, t("restore.step1")), field(t("restore.chooseBackup"), backupSelect), nav(t("common.next"))),
    () => {
      const driver = state.backup.driver;
      if (!targetJson.value) targetJson.value = JSON.stringify(DRIVER_TEMPLATES[driver] || {}, null, 2);
      targetBox.querySelector("label").textContent = t("restore.targetJson", { driver });
      return h(
        "div",
        {},
        h("h2", {}, t("restore.step2")),
        h(
          "fieldset",
          {},
          h("legend", {}, t("restore.target")),
          h("label", { class: "choice" }, targetRadios[0], t("restore.original", { source: state.backup.source })),
          h("label", { class: "choice" }, targetRadios[1], t("restore.other")),
        ),
        targetBox,
        nav(t("common.next")),
      );
    },
    () =>
      h(
        "div",
        {},
        h("h2", {}, t("restore.step3")),
        h(
          "fieldset",
          {},
          h("legend", {}, t("restore.mode")),
          modeRadios.map((radio) => h("label", { class: "choice" }, radio, t(`restore.mode.${radio.value}`))),
        ),
        state.backup.driver === "sql"
          ? h(
              "fieldset",
              { id: "restore-tables" },
              h("legend", {}, t("restore.includeTables")),
              tableBoxes.map((box) => h("label", { class: "choice" }, box, box.value)),
            )
          : field(t("restore.includePaths"), includePaths),
        nav(t("common.next")),
      ),
    () => {
      const chosen = include();
      const replace = mode() === "replace";
      confirmInput.value = "";
      const target = otherTarget() ? parseObject(targetJson.value).value : null;
      const view = h(
        "div",
        {},
        h("h2", {}, t("restore.step4")),
        facts([
          [t("restore.chooseBackup"), `${state.backup.source} · ${dateTime(state.backup.created_at)} · ${state.backup.id}`],
          [t("restore.target"), target ? JSON.stringify(target) : t("restore.original", { source: state.backup.source })],
          [t("restore.mode"), t(`restore.mode.${mode()}`)],
          [t("restore.include"), chosen.length ? chosen.join(", ") : t("restore.everything")],
        ]),
        replace ? field(t("restore.confirmLabel", { name: state.backup.source }), confirmInput) : null,
        nav(mode() === "dry-run" ? t("restore.runDry") : t("restore.run")),
      );
      const run = view.querySelector("#step-next");
      if (replace) {
        run.classList.add("danger");
        run.disabled = true;
        confirmInput.oninput = () => {
          run.disabled = confirmInput.value !== state.backup.source;
        };
      }
      return view;
    },
  ];

  async function show(step) {
    state.step = step;
    if (step === 2) await loadTables();
    for (const li of stepList.children) {
      const i = Number(li.dataset.step);
      li.className = i < step ? "done" : "";
      if (i === step) li.setAttribute("aria-current", "step");
      else li.removeAttribute("aria-current");
    }
    const form = h("form", { novalidate: true }, stepViews[step]());
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      next(form);
    });
    panel.replaceChildren(form);
    panel.querySelector("h2").setAttribute("tabindex", "-1");
    panel.querySelector("h2").focus();
  }

  async function next(form) {
    if (state.step === 1 && otherTarget()) {
      const parsed = parseObject(targetJson.value);
      targetError.textContent = parsed.error || "";
      targetJson.setAttribute("aria-invalid", String(Boolean(parsed.error)));
      if (parsed.error) {
        targetJson.setAttribute("aria-describedby", "target-error");
        targetJson.focus();
        return;
      }
    }
    if (state.step < STEPS.length - 1) {
      await show(state.step + 1);
      return;
    }
    const button = form.querySelector("#step-next");
    await busy(button, async () => {
      const body = { backup_id: state.backup.id, mode: mode() };
      if (otherTarget()) body.target = parseObject(targetJson.value).value;
      const chosen = include();
      if (chosen.length) body.include = chosen;
      if (mode() === "replace") body.confirm = confirmInput.value;
      result.replaceChildren();
      const restore = await api.post("/api/v1/restores", body);
      announce(t("restore.started", { id: restore.id }));
      follow(restore.id);
    });
  }

  function follow(id) {
    poll(ctx, async () => {
      const restore = await api.get(`/api/v1/restores/${id}`);
      const p = restore.progress || {};
      const again = h("button", { type: "button", class: "btn", id: "restore-again" }, t("restore.again"));
      again.addEventListener("click", () => show(2));
      result.replaceChildren(
        h(
          "div",
          { class: "card", id: "restore-card", dataset: { restore: restore.id } },
          h("h2", {}, t("restore.result")),
          h("p", {}, statusBadge(restore.status, "restore-status"), " ", h("a", { href: href(`/restores/${restore.id}`), id: "restore-job-link" }, t("restore.jobLink", { id: restore.id }))),
          ACTIVE.includes(restore.status) ? h("progress", { max: "100", value: p.percent ?? 0, "aria-label": percent((p.percent ?? 0) / 100) }) : null,
          restore.error ? h("p", { class: "error" }, `${restore.error.code}: ${restore.error.message}`) : null,
          reportView(restore.report),
          ACTIVE.includes(restore.status) ? null : h("div", { class: "actions" }, again),
        ),
      );
      return ACTIVE.includes(restore.status);
    });
  }

  await show(0);
}
