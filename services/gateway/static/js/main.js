// Start-up: the message catalog, the theme, the session, then the current page.
import { whenUnauthenticated } from "./api.js";
import { announce, clear, h } from "./dom.js";
import { AVAILABLE, chooseLanguage, currentLocale, loadCatalog, t } from "./i18n.js";
import { PAGES } from "./pages/index.js";
import { href, navigate, resolve } from "./router.js";
import { resume, session, signOut } from "./session.js";
import { initTheme, themeToggle } from "./theme.js";

const main = document.getElementById("main");
let cleanups = [];
let renderSeq = 0;

function leave() {
  for (const fn of cleanups) {
    try {
      fn();
    } catch (err) {
      console.error(err);
    }
  }
  cleanups = [];
}

function allowedPages() {
  return PAGES.filter((page) => session.can(page.needs));
}

function renderChrome() {
  const header = document.getElementById("app-header");
  const nav = clear(document.getElementById("nav"));
  const box = clear(document.getElementById("session"));
  document.getElementById("skip-link").textContent = t("app.skip");
  document.getElementById("brand-name").textContent = t("app.name");
  nav.setAttribute("aria-label", t("nav.label"));
  if (!session.me) {
    header.hidden = true;
    return;
  }
  header.hidden = false;
  const list = h("ul", {});
  for (const page of allowedPages().filter((p) => p.nav)) {
    list.append(h("li", {}, h("a", { href: href(page.path), dataset: { page: page.id } }, t(page.nav))));
  }
  nav.append(list);
  const me = session.me;
  box.append(
    h(
      "span",
      { class: "who" },
      t("session.who", { name: me.name || me.role, role: t(`role.${me.role}`) }),
      " · ",
      me.tenant ? t("session.tenant", { tenant: me.tenant }) : t("session.allTenants"),
    ),
    languagePicker(),
    themeToggle(),
    h(
      "button",
      {
        type: "button",
        class: "btn",
        id: "sign-out",
        onclick: () => {
          signOut();
          announce(t("session.signedOut"));
          navigate("/");
        },
      },
      t("session.signOut"),
    ),
  );
}

function languagePicker() {
  const picker = h(
    "select",
    { id: "language", "aria-label": t("lang.label") },
    AVAILABLE.map((lang) => h("option", { value: lang, selected: lang === currentLocale() }, t(`lang.${lang}`))),
  );
  picker.addEventListener("change", () => chooseLanguage(picker.value));
  return picker;
}

function markCurrent(pageId) {
  const parent = { backup: "backups", source: "sources", restorejob: "restore", schedule: "schedules" }[pageId] || pageId;
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.page === parent) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

async function render() {
  const seq = ++renderSeq;
  leave();
  renderChrome();
  clear(main);
  if (!session.me) {
    const { render: renderSignIn } = await import("./pages/signin.js");
    await renderSignIn({ main, onSignedIn: () => render() });
    return;
  }
  const route = resolve();
  let page = route.page;
  if (page && page.path === "/" && !session.can(page.needs)) {
    // the landing page for a role that may not read backups (an auditor)
    page = allowedPages()[0];
  }
  if (!page) {
    main.append(h("h1", { tabindex: "-1" }, t("app.notFound")));
    return;
  }
  if (!session.can(page.needs)) {
    main.append(h("h1", { tabindex: "-1" }, t("app.forbidden")));
    return;
  }
  markCurrent(page.id);
  main.setAttribute("aria-busy", "true");
  main.append(h("p", { class: "loading" }, t("app.loading")));
  try {
    const module = await page.load();
    if (seq !== renderSeq) return;
    clear(main);
    await module.render({
      main,
      params: route.params,
      query: route.query,
      onLeave: (fn) => cleanups.push(fn),
      isCurrent: () => seq === renderSeq,
    });
  } catch (err) {
    if (seq !== renderSeq) return;
    clear(main);
    main.append(h("p", { class: "error", role: "alert" }, t("app.error", { message: err.message })));
  } finally {
    if (seq === renderSeq) main.removeAttribute("aria-busy");
  }
  const title = main.querySelector("h1");
  document.title = title ? `${title.textContent} · ${t("app.name")}` : t("app.name");
}

async function start() {
  initTheme();
  await loadCatalog();
  whenUnauthenticated(() => {
    if (!session.me) return;
    signOut();
    announce(t("session.expired"), "error");
    render();
  });
  await resume();
  window.addEventListener("hashchange", () => {
    render().then(() => main.querySelector("h1")?.focus({ preventScroll: true }));
  });
  await render();
  document.body.dataset.ready = "true";
}

start().catch((err) => {
  main.append(h("p", { class: "error", role: "alert" }, String(err)));
});
