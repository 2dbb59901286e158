// Numbers, sizes and dates in the reader's locale (Intl), never hand-built strings.
import { currentLocale, t } from "./i18n.js";

const UNITS = ["byte", "kilobyte", "megabyte", "gigabyte", "terabyte", "petabyte"];

export function bytes(value) {
  if (value === null || value === undefined) return t("common.none");
  let n = Number(value);
  let unit = 0;
  while (Math.abs(n) >= 1000 && unit < UNITS.length - 1) {
    n /= 1000;
    unit += 1;
  }
  return new Intl.NumberFormat(currentLocale(), {
    style: "unit",
    unit: UNITS[unit],
    unitDisplay: "short",
    maximumFractionDigits: unit === 0 ? 0 : 1,
  }).format(n);
}

export function number(value, digits = 0) {
  if (value === null || value === undefined) return t("common.none");
  return new Intl.NumberFormat(currentLocale(), { maximumFractionDigits: digits }).format(value);
}

export function percent(fraction) {
  if (fraction === null || fraction === undefined) return t("common.none");
  return new Intl.NumberFormat(currentLocale(), {
    style: "percent",
    maximumFractionDigits: 1,
  }).format(fraction);
}

/** API times are UTC ISO strings; some come without a zone marker. */
export function parseTime(value) {
  if (!value) return null;
  const text = /[zZ]|[+-]\d\d:?\d\d$/.test(value) ? value : `${value}Z`;
  const date = new Date(text);
  return Number.isNaN(date.getTime()) ? null : date;
}

export function dateTime(value) {
  const date = parseTime(value);
  if (!date) return t("common.none");
  return new Intl.DateTimeFormat(currentLocale(), {
    dateStyle: "medium",
    timeStyle: "medium",
  }).format(date);
}

export function relative(seconds) {
  const fmt = new Intl.RelativeTimeFormat(currentLocale(), { numeric: "auto" });
  const s = -Math.round(seconds);
  if (Math.abs(s) < 90) return fmt.format(s, "second");
  if (Math.abs(s) < 5400) return fmt.format(Math.round(s / 60), "minute");
  if (Math.abs(s) < 129600) return fmt.format(Math.round(s / 3600), "hour");
  return fmt.format(Math.round(s / 86400), "day");
}

/** A date input's value (YYYY-MM-DD, the reader's day) as the UTC instant it starts or ends. */
export function dayBoundary(day, end = false) {
  if (!day) return undefined;
  const [y, m, d] = day.split("-").map(Number);
  const local = end ? new Date(y, m - 1, d, 23, 59, 59, 999) : new Date(y, m - 1, d);
  return local.toISOString();
}

/** A length of time (an ETA, a promised RPO) in the largest fitting units, e.g. "2 h 5 min". */
export function duration(seconds) {
  if (seconds === null || seconds === undefined) return t("common.none");
  let s = Math.max(0, Math.round(Number(seconds)));
  const parts = [];
  for (const [unit, size] of [["day", 86400], ["hour", 3600], ["minute", 60], ["second", 1]]) {
    if (s >= size || (unit === "second" && !parts.length)) {
      const n = Math.floor(s / size);
      s -= n * size;
      parts.push(new Intl.NumberFormat(currentLocale(), { style: "unit", unit, unitDisplay: "short" }).format(n));
    }
    if (parts.length === 2) break;
  }
  return parts.join(" ");
}
