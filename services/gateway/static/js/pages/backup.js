import { api, download, errorText } from "../api.js";
import { announce, facts, h, statusBadge } from "../dom.js";
import { bytes, dateTime, number } from "../format.js";
import { ACTIVE, cancelButton, jobDetailPage } from "../jobs.js";
import { t } from "../i18n.js";
import { href, navigate } from "../router.js";
import { session } from "../session.js";
import { busy, onConfirmedClick, sortableTable } from "../widgets.js";


function verificationText(v) {
  if (!v) return t("common.none");
  return t("backup.verifyResult", {
    status: t(`status.${v.status}`),
    chunks: number(v.chunks ?? 0),
    missing: number(v.missing?.length ?? 0),
    corrupt: number(v.corrupt?.length ?? 0),
  });
}

async function tablesSection(backup) {
  let tables;
  try {
    tables = (await api.get(`/api/v1/backups/${backup.id}/tables`)).items;
  } catch (err) {
    return h("p", { class: "error" }, errorText(err));
  }
  const columns = [
    { label: t("source.table"), key: (r) => r.name, cell: (r) => r.name },
    { label: t("backup.rows"), key: (r) => r.rows, cell: (r) => number(r.rows) },
  ];
  if (session.can("write")) {
    columns.push({
      label: t("backup.exportCsv"),
      cell: (r) => exportButton(backup.id, r.name),
    });
  }
  return h(
    "section",
    { class: "card", "aria-labelledby": "tables-title", id: "backup-tables" },
    h("h2", { id: "tables-title" }, t("backup.tables")),
    sortableTable(t("backup.tablesCaption"), columns, tables),
  );
}

/** A button that downloads one table as CSV (the API needs the token, a plain link cannot send it). */
export function exportButton(backupId, table) {
  const button = h(
    "button",
    { type: "button", class: "btn small", "aria-label": t("backup.exportLabel", { table }) },
    t("backup.exportCsv"),
  );
  button.addEventListener("click", () =>
    busy(button, async () => {
      announce(t("common.downloading", { name: `${table}.csv` }));
      await download(`/api/v1/backups/${backupId}/tables/${encodeURIComponent(table)}.csv`, `${table}.csv`);
    }),
  );
  return button;
}

/** Legal hold: an operator may hold, only an admin may release (the API's rule). */
function holdButton(backup, refresh) {
  if (backup.legal_hold && !session.isAdmin) return null;
  const held = Boolean(backup.legal_hold);
  const button = h(
    "button",
    { type: "button", class: "btn", id: held ? "release-hold" : "hold-backup" },
    held ? t("hold.release") : t("hold.hold"),
  );
  // Placing a hold loses nothing, so only a release asks first.
  const dialog = held
    ? { title: t("hold.releaseTitle"), text: t("hold.releaseText", { id: backup.id }), confirmLabel: t("hold.release") }
    : null;
  onConfirmedClick(button, dialog, async () => {
    const path = `/api/v1/backups/${encodeURIComponent(backup.id)}/hold`;
    const after = held ? await api.del(path) : await api.post(path);
    announce(after.legal_hold ? t("hold.held", { id: backup.id }) : t("hold.released", { id: backup.id }));
    refresh();
  });
  return button;
}

function actions(backup, refresh) {
  if (!session.can("write")) return null;
  const bar = h("div", { class: "actions", id: "backup-actions" });
  const done = backup.status === "completed";
  if (ACTIVE.includes(backup.status)) bar.append(cancelButton("backup", backup, refresh));
  if (done) {
    const verify = h("button", { type: "button", class: "btn", id: "verify-backup" }, t("backup.verify"));
    verify.addEventListener("click", () =>
      busy(verify, async () => {
        await api.post(`/api/v1/backups/${backup.id}/verify`);
        announce(t("backup.verifyStarted"));
        refresh();
      }),
    );
    const dl = h("button", { type: "button", class: "btn", id: "download-backup" }, t("common.download"));
    dl.addEventListener("click", () =>
      busy(dl, async () => {
        announce(t("common.downloading", { name: backup.source }));
        await download(`/api/v1/backups/${backup.id}/download`, `coffer-${backup.id}`);
      }),
    );
    bar.append(
      verify,
      dl,
      holdButton(backup, refresh),
      h("a", { class: "btn primary", id: "restore-backup", href: href("/restore", { backup: backup.id }) }, t("backup.restore")),
    );
  }
  if (!ACTIVE.includes(backup.status) && !backup.legal_hold) {
    const del = h("button", { type: "button", class: "btn danger", id: "delete-backup" }, t("backup.delete"));
    const dialog = {
      title: t("backup.deleteTitle"),
      text: t("backup.deleteText", { id: backup.id, source: backup.source }),
      confirmLabel: t("common.delete"),
    };
    onConfirmedClick(del, dialog, async () => {
      await api.del(`/api/v1/backups/${backup.id}`);
      announce(t("backup.deleted", { id: backup.id }));
      navigate("/backups");
    });
    bar.append(del);
  }
  return bar;
}

export async function render(ctx) {
  let tables = null;
  jobDetailPage(ctx, {
    kind: "backup",
    title: t("backup.title", { id: ctx.params.id }),
    summary: summaryCard,
    // The summary's buttons change with the verification and the hold too.
    state: (backup) => `${backup.verification?.status}/${backup.legal_hold}`,
    // Read once, when the backup has completed: the tables do not change after that.
    sections: async (backup) => {
      if (backup.status === "completed" && backup.driver === "sql" && !tables) tables = await tablesSection(backup);
      return [tables];
    },
    // A verification runs after the backup: keep polling until it has ended too.
    polling: (backup) => ACTIVE.includes(backup.status) || ACTIVE.includes(backup.verification?.status),
  });
}

function summaryCard(backup, refresh) {
  return h(
    "section",
    { class: "card", "aria-labelledby": "summary-title" },
    h("h2", { id: "summary-title", class: "visually-hidden" }, t("backup.title", { id: backup.id })),
    h(
      "p",
      { class: "status-line" },
      statusBadge(backup.status, "backup-status"),
      backup.legal_hold ? [" ", h("span", { class: "badge badge-hold", id: "backup-hold" }, t("hold.badge"))] : null,
    ),
    facts([
      [t("common.source"), h("a", { href: href(`/sources/${backup.source_id}`) }, backup.source)],
      [t("common.tenant"), backup.tenant],
      [t("common.driver"), backup.driver],
      [t("common.note"), backup.note || t("common.none")],
      [t("backup.requestedBy"), backup.requested_by || t("common.none")],
      [t("common.created"), dateTime(backup.created_at)],
      [t("backup.startedAt"), dateTime(backup.started_at)],
      [t("backup.finishedAt"), dateTime(backup.finished_at)],
      [t("backup.sizeLogical"), bytes(backup.size?.logical)],
      [t("backup.sizeStored"), bytes(backup.size?.stored)],
      [t("backup.entries"), number(backup.entries)],
      [t("backup.attempts"), number(backup.attempts)],
      [t("hold.label"), backup.legal_hold ? t("common.yes") : t("common.no")],
      [t("backup.verification"), verificationText(backup.verification)],
      ...(backup.schedule_id ? [[t("backup.schedule"), h("a", { href: href(`/schedules/${backup.schedule_id}`) }, backup.schedule_id)]] : []),
      ...(backup.error ? [[t("backup.error"), `${backup.error.code}: ${backup.error.message}`]] : []),
    ]),
    actions(backup, refresh),
  );
}
