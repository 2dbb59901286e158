// Who is signed in (GET /api/v1/me) and what that role may see and do.
import { api, getToken, request, setToken } from "./api.js";

const ROLE_CAN = {
  read: ["admin", "operator", "viewer"],
  write: ["admin", "operator"],
  admin: ["admin"],
  audit: ["admin", "auditor"],
};

export const session = {
  me: null,
  /** Does the signed-in role have this capability (read, write, admin, audit)? */
  can(capability) {
    return Boolean(this.me && ROLE_CAN[capability]?.includes(this.me.role));
  },
  get isAdmin() {
    return this.can("admin");
  },
};

export async function signIn(token) {
  const me = await request("GET", "/api/v1/me", { token });
  setToken(token);
  session.me = me;
  return me;
}

/** Resume the tab's session, if it has a token that still works. */
export async function resume() {
  if (!getToken()) return null;
  try {
    session.me = await api.get("/api/v1/me");
  } catch {
    setToken(null);
    session.me = null;
  }
  return session.me;
}

export function signOut() {
  setToken(null);
  session.me = null;
}

/** Tenants the user may pick from: an admin lists them, anyone else has one. */
export async function tenantChoices() {
  if (session.me?.tenant) return [session.me.tenant];
  if (!session.isAdmin) return [];
  const { items } = await api.get("/api/v1/tenants");
  return items.map((tenant) => tenant.name);
}
