// The dashboard's pages. Adding one is a module in this folder exporting
// `render(ctx)` and an entry here: its path, the capability a role needs to open it
// (see session.js), and its navigation label if it belongs in the menu.

export const PAGES = [
  { id: "overview", path: "/", nav: "nav.overview", needs: "read", load: () => import("./overview.js") },
  { id: "backups", path: "/backups", nav: "nav.backups", needs: "read", load: () => import("./backups.js") },
  { id: "backup", path: "/backups/:id", needs: "read", load: () => import("./backup.js") },
  { id: "restore", path: "/restore", nav: "nav.restore", needs: "write", load: () => import("./restore.js") },
  { id: "restorejob", path: "/restores/:id", needs: "read", load: () => import("./restorejob.js") },
  { id: "sources", path: "/sources", nav: "nav.sources", needs: "read", load: () => import("./sources.js") },
  { id: "source", path: "/sources/:id", needs: "read", load: () => import("./source.js") },
  { id: "schedules", path: "/schedules", nav: "nav.schedules", needs: "read", load: () => import("./schedules.js") },
  { id: "schedule", path: "/schedules/:id", needs: "read", load: () => import("./schedule.js") },
  { id: "audit", path: "/audit", nav: "nav.audit", needs: "audit", load: () => import("./audit.js") },
];
