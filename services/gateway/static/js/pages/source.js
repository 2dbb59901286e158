import { api, errorText, request } from "../api.js";
import { announce, appendAll, facts, field, h, heading, statusBadge } from "../dom.js";
import { dateTime, number } from "../format.js";
import { t } from "../i18n.js";
import { href, navigate } from "../router.js";
import { session } from "../session.js";
import { policyFields, policyText, previewTable } from "../retention.js";
import { apiErrorText } from "../scheduleform.js";
import { busy, sortableTable } from "../widgets.js";
import { exportButton } from "./backup.js";

function statsView(stats) {
  const { tables, source: _s, name: _n, driver: _d, ...rest } = stats;
  const parts = [];
  if (tables) {
    parts.push(
      sortableTable(
        t("source.statsCaption"),
        [
          { label: t("source.table"), key: (r) => r[0], cell: (r) => r[0] },
          { label: t("backup.rows"), key: (r) => r[1], cell: (r) => number(r[1]) },
        ],
        Object.entries(tables),
      ),
    );
  }
  parts.push(facts(Object.entries(rest).map(([k, v]) => [k, typeof v === "number" ? number(v) : JSON.stringify(v)])));
  return parts;
}

function clearForm(source, tables) {
  const boxes = tables.map((name) => h("input", { type: "checkbox", name: "tables", value: name }));
  const confirm = h("input", { type: "text", name: "confirm", autocomplete: "off", spellcheck: false, id: "clear-confirm" });
  const error = h("p", { class: "error", id: "clear-error" });
  const submit = h("button", { type: "submit", class: "btn danger", id: "clear-submit", disabled: true }, t("source.clearRun"));
  confirm.addEventListener("input", () => {
    submit.disabled = confirm.value !== source.name;
  });
  const form = h(
    "form",
    { class: "card", id: "clear-tables", "aria-labelledby": "clear-title" },
    h("h2", { id: "clear-title" }, t("source.clear")),
    h("p", { class: "help" }, t("source.clearHelp")),
    h("fieldset", {}, h("legend", {}, t("source.clearPick")), boxes.map((b) => h("label", { class: "choice" }, b, b.value))),
    field(t("common.typeToConfirm", { name: source.name }), confirm),
    error,
    h("div", { class: "actions" }, submit),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const chosen = boxes.filter((b) => b.checked).map((b) => b.value);
    error.textContent = chosen.length ? "" : t("source.clearNone");
    if (!chosen.length) return;
    busy(submit, async () => {
      const backup = await api.post(`/api/v1/sources/${source.id}/clear`, { tables: chosen, confirm: confirm.value });
      announce(t("source.clearStarted", { id: backup.id }));
      navigate(`/backups/${backup.id}`);
    });
  });
  return form;
}

async function exportSection(source) {
  const latest = (await api.get("/api/v1/backups", { source: source.id, status: "completed", per_page: 1 })).items[0];
  const section = h("section", { class: "card", id: "source-export", "aria-labelledby": "export-title" }, h("h2", { id: "export-title" }, t("source.export")));
  if (!latest) {
    section.append(h("p", {}, t("source.noLogical")));
    return section;
  }
  const { items } = await api.get(`/api/v1/backups/${latest.id}/tables`);
  section.append(
    h("p", {}, h("a", { href: href(`/backups/${latest.id}`) }, t("source.exportFrom", { id: latest.id, created: dateTime(latest.created_at) }))),
    sortableTable(
      t("backup.tablesCaption"),
      [
        { label: t("source.table"), key: (r) => r.name, cell: (r) => r.name },
        { label: t("backup.rows"), key: (r) => r.rows, cell: (r) => number(r.rows) },
        { label: t("backup.exportCsv"), cell: (r) => exportButton(latest.id, r.name) },
      ],
      items,
    ),
  );
  return section;
}

/** The source's retention policy: shown, edited (PUT), removed (DELETE), previewed. */
async function retentionSection(source) {
  const { policy } = await api.get(`/api/v1/sources/${encodeURIComponent(source.id)}/retention`);
  const current = h("p", { id: "retention-current" }, policyText(policy));
  const fields = policyFields(policy, "source-retention");
  const error = h("p", { class: "error", id: "retention-error", role: "alert" });
  const previewBox = h("div", { id: "retention-preview-box", "aria-live": "polite" });
  const preview = h("button", { type: "button", class: "btn", id: "retention-preview-run" }, t("retention.preview"));
  const write = session.can("write");
  const save = write ? h("button", { type: "submit", class: "btn primary", id: "retention-save" }, t("retention.save")) : null;
  const remove = write ? h("button", { type: "button", class: "btn", id: "retention-remove", hidden: !policy }, t("retention.remove")) : null;
  const path = `/api/v1/sources/${encodeURIComponent(source.id)}/retention`;
  const show = (saved) => {
    current.textContent = policyText(saved.policy);
    if (remove) remove.hidden = !saved.policy;
    previewBox.replaceChildren();
  };
  const attempt = (button, action) =>
    busy(button, async () => {
      error.textContent = "";
      try {
        await action();
      } catch (err) {
        error.textContent = apiErrorText(err);
      }
    });
  preview.addEventListener("click", () =>
    attempt(preview, async () => {
      // the policy in the form, saved or not: try a rule before making it the rule
      previewBox.replaceChildren(await previewTable({ source: source.id }, fields.read()));
    }),
  );
  remove?.addEventListener("click", () =>
    attempt(remove, async () => {
      show(await api.del(path));
      announce(t("retention.removedPolicy"));
    }),
  );
  const form = h(
    "form",
    { class: "card", id: "source-retention", "aria-labelledby": "retention-title", novalidate: true },
    h("h2", { id: "retention-title" }, t("retention.title")),
    current,
    h("p", { class: "help" }, t("retention.help")),
    write ? fields.fieldset : null,
    error,
    h("div", { class: "actions" }, preview, save, remove),
    previewBox,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!save) return;
    attempt(save, async () => {
      const policyNow = fields.read();
      if (!policyNow) {
        error.textContent = t("retention.empty");
        return;
      }
      show(await request("PUT", path, { body: policyNow }));
      announce(t("retention.saved"));
    });
  });
  return form;
}

export async function render(ctx) {
  const { main, params } = ctx;
  const source = await api.get(`/api/v1/sources/${encodeURIComponent(params.id)}`);
  const statsBox = h("div", { id: "source-stats-body" }, h("p", { class: "loading" }, t("app.loading")));
  const refresh = h("button", { type: "button", class: "btn", id: "stats-refresh" }, t("common.refresh"));
  const clearBox = h("div", {});
  const loadStats = async () => {
    try {
      const stats = await api.get(`/api/v1/sources/${source.id}/stats`);
      statsBox.replaceChildren(...statsView(stats));
      if (session.can("admin") && source.driver === "sql" && stats.tables && !clearBox.firstChild) {
        clearBox.append(clearForm(source, Object.keys(stats.tables)));
      }
    } catch (err) {
      statsBox.replaceChildren(h("p", { class: "error" }, errorText(err)));
    }
  };
  refresh.addEventListener("click", () => busy(refresh, loadStats));

  const actions = h("div", { class: "actions" });
  if (session.can("write")) {
    const backupNow = h("button", { type: "button", class: "btn primary", id: "backup-now" }, t("source.backupNow"));
    backupNow.addEventListener("click", () =>
      busy(backupNow, async () => {
        const backup = await api.post("/api/v1/backups", { source: source.id });
        announce(t("backups.started", { id: backup.id }));
        navigate(`/backups/${backup.id}`);
      }),
    );
    actions.append(backupNow);
  }
  actions.append(h("a", { class: "btn", id: "source-schedules", href: href("/schedules", { source: source.id }) }, t("source.schedules")));
  const recent = (await api.get("/api/v1/backups", { source: source.id, per_page: 5 })).items;
  appendAll(main, 
    heading(t("source.title", { name: source.name })),
    h(
      "section",
      { class: "card" },
      facts([
        [t("common.tenant"), source.tenant],
        [t("common.driver"), source.driver],
        [t("common.created"), dateTime(source.created_at)],
        [t("common.config"), h("pre", { class: "json" }, JSON.stringify(source.config, null, 2))],
      ]),
      actions,
    ),
    h(
      "section",
      { class: "card", id: "source-stats", "aria-labelledby": "stats-title" },
      h("h2", { id: "stats-title" }, t("source.stats")),
      statsBox,
      h("div", { class: "actions" }, refresh),
    ),
    h(
      "section",
      { class: "card", "aria-labelledby": "recent-title" },
      h("h2", { id: "recent-title" }, t("source.recent")),
      sortableTable(
        t("backups.caption"),
        [
          { label: t("backups.col.created"), key: (b) => b.created_at, cell: (b) => h("a", { href: href(`/backups/${b.id}`) }, dateTime(b.created_at)) },
          { label: t("backups.col.status"), key: (b) => b.status, cell: (b) => statusBadge(b.status) },
          { label: t("backups.col.note"), key: (b) => b.note || "", cell: (b) => b.note || "" },
        ],
        recent,
      ),
    ),
    await retentionSection(source),
    source.driver === "sql" && session.can("write") ? await exportSection(source) : null,
    clearBox,
  );
  await loadStats();
}
