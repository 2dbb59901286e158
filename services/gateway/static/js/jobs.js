// What backup and restore job pages share: the page itself (heading, summary, live
// progress with rate and time left, the job log, polling), and cancel (behind a
// confirmation) while a job is pending or running.
import { api } from "./api.js";
import { announce, appendAll, h, heading } from "./dom.js";
import { bytes, dateTime, duration, number, percent } from "./format.js";
import { t } from "./i18n.js";
import { onConfirmedClick, poll } from "./widgets.js";

export const ACTIVE = ["pending", "running"];

/** The progress card of a job (`kind`: backup or restore), rate and ETA when known. */
export function progressBlock(kind, job) {
  const p = job.progress || {};
  const fraction = p.percent === null || p.percent === undefined ? null : p.percent / 100;
  const text = t("job.progressText", {
    percent: percent(fraction),
    done: bytes(p.bytes_done),
    total: bytes(p.bytes_total),
  });
  const bar = h("progress", { id: `${kind}-progress`, max: "100", "aria-valuetext": text });
  if (fraction !== null) bar.value = p.percent;
  else if (job.status === "completed") bar.value = 100;
  const running = job.status === "running";
  const rate = running && p.rate_bytes_per_second != null ? t("job.rateValue", { rate: bytes(p.rate_bytes_per_second) }) : t("common.none");
  const eta = running && p.eta_seconds != null ? duration(p.eta_seconds) : t("common.none");
  return h(
    "section",
    { class: "card", "aria-labelledby": `${kind}-progress-title` },
    h("h2", { id: `${kind}-progress-title` }, t("job.progress")),
    h("label", { for: `${kind}-progress`, class: "progress-label" }, text),
    bar,
    h(
      "dl",
      { class: "facts compact" },
      h("div", {}, h("dt", {}, t("job.items")), h("dd", {}, t("job.itemsValue", { done: number(p.items_done), total: number(p.items_total) }))),
      h("div", {}, h("dt", {}, t("job.rate")), h("dd", { id: "job-rate" }, rate)),
      h("div", {}, h("dt", {}, t("job.eta")), h("dd", { id: "job-eta" }, eta)),
    ),
    job.cancel_requested_at ? h("p", { class: "help", id: "job-cancel-requested" }, t("job.cancelRequested", { at: dateTime(job.cancel_requested_at) })) : null,
  );
}

/** The job log (GET .../log), newest last; refreshed by the page's polling. */
export function logSection(kind) {
  const body = h("tbody", {});
  const section = h(
    "section",
    { class: "card", id: "job-log", "aria-labelledby": "job-log-title" },
    h("h2", { id: "job-log-title" }, t("job.log")),
    h(
      "div",
      { class: "table-wrap log" },
      h(
        "table",
        {},
        h("caption", { class: "visually-hidden" }, t("job.log")),
        h(
          "thead",
          {},
          h("tr", {}, h("th", { scope: "col" }, t("job.logAt")), h("th", { scope: "col" }, t("job.logLevel")), h("th", { scope: "col" }, t("job.logMessage"))),
        ),
        body,
      ),
    ),
  );
  let shown = -1;
  async function refresh(id) {
    const { items } = await api.get(`/api/v1/${kind}s/${encodeURIComponent(id)}/log`);
    if (items.length === shown) return;
    shown = items.length;
    body.replaceChildren(
      ...(items.length
        ? items.map((line) =>
            h(
              "tr",
              { dataset: { level: line.level } },
              h("td", { class: "nowrap" }, dateTime(line.at)),
              h("td", {}, h("span", { class: `badge level-${line.level}` }, t(`job.level.${line.level}`))),
              h("td", {}, line.message),
            ),
          )
        : [h("tr", {}, h("td", { colspan: 3, class: "empty" }, t("common.empty")))]),
    );
  }
  return { section, refresh };
}

/** A cancel button for a pending or running job, confirmed in a dialog first. */
export function cancelButton(kind, job, onDone) {
  const button = h("button", { type: "button", class: "btn danger", id: "cancel-job" }, t("job.cancel"));
  if (job.cancel_requested_at) button.disabled = true;
  const dialog = {
    title: t("job.cancelTitle"),
    text: t(`job.cancelText.${kind}`, { id: job.id, source: job.source }),
    confirmLabel: t("job.cancelConfirm"),
  };
  return onConfirmedClick(button, dialog, async () => {
    const after = await api.post(`/api/v1/${kind}s/${encodeURIComponent(job.id)}/cancel`);
    announce(after.status === "cancelled" ? t("job.cancelled") : t("job.cancelSent"));
    onDone(after);
  });
}

/**
 * Poll a job page with `tick` (true: poll again) until the job has ended. The returned
 * function reads the job again at once after an action (cancel, hold, verify), and
 * starts polling again when it had stopped (a verification runs after the backup).
 */
export function followJob(ctx, tick) {
  let polling = false;
  const start = () => {
    polling = true;
    poll(ctx, async () => {
      polling = await tick();
      return polling;
    });
  };
  start();
  return () => (polling ? tick() : start());
}

/**
 * The page of one job (`kind`: backup or restore), shared so that both pages poll,
 * rebuild and announce the same way. Under `title`: the summary card, the progress card,
 * what `sections` adds, then the log. `summary(job, refresh)` builds the card with the
 * buttons; it is rebuilt only when the status, the cancel request or `state(job)`
 * changes, so that polling never takes the keyboard focus away. `sections(job)` is
 * awaited before the summary is built (a section may read the API). Polling goes on
 * while `polling(job)`; `refresh` (given to the buttons) rebuilds and reads again at once.
 */
export function jobDetailPage(
  ctx,
  { kind, title, summary, state = () => "", sections = async () => [], polling = (job) => ACTIVE.includes(job.status) },
) {
  const { main, params } = ctx;
  const body = h("div", { id: `${kind}-detail` });
  appendAll(main, heading(title), body);
  const log = logSection(kind);
  let lastState = null;
  let card = null;
  let reread = null;
  const refresh = () => {
    lastState = null;
    reread();
  };
  const tick = async () => {
    const job = await api.get(`/api/v1/${kind}s/${encodeURIComponent(params.id)}`);
    const current = `${job.status}/${job.cancel_requested_at}/${state(job)}`;
    const extra = await sections(job);
    if (current !== lastState) card = summary(job, refresh);
    await log.refresh(job.id);
    body.replaceChildren(...[card, progressBlock(kind, job), ...extra, log.section].filter(Boolean));
    if (lastState && lastState.split("/")[0] !== job.status) announce(`${t("common.status")}: ${t(`status.${job.status}`)}`);
    lastState = current;
    return polling(job);
  };
  reread = followJob(ctx, tick);
}
