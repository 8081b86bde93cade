"use server";

import { revalidatePath } from "next/cache";
import { redirect } from "next/navigation";
import { authHeaders, backendUrl } from "./backend";

async function detail(res: Response): Promise<string> {
  try {
    const body = await res.json();
    if (typeof body?.detail === "string") return body.detail;
  } catch {
    // not JSON
  }
  return `backend answered ${res.status}`;
}

async function send(path: string, init: RequestInit): Promise<string | null> {
  try {
    const res = await fetch(`${backendUrl()}${path}`, {
      ...init,
      headers: { "Content-Type": "application/json", ...authHeaders(), ...init.headers },
      cache: "no-store",
      signal: AbortSignal.timeout(5000),
    });
    return res.ok ? null : await detail(res);
  } catch {
    return "backend unreachable";
  }
}

function done(error: string | null): never {
  revalidatePath("/");
  redirect(error ? `/?error=${encodeURIComponent(error)}` : "/");
}

export async function addTask(formData: FormData): Promise<void> {
  const title = String(formData.get("title") ?? "").trim();
  if (!title) done("title is required");
  done(await send("/api/tasks", { method: "POST", body: JSON.stringify({ title }) }));
}

export async function toggleTask(formData: FormData): Promise<void> {
  const id = Number(formData.get("id"));
  if (!Number.isInteger(id)) done("bad task id");
  done(await send(`/api/tasks/${id}/toggle`, { method: "POST" }));
}
