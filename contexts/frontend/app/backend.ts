// Server-only helpers for talking to the task API.
// BACKEND_URL and BACKEND_TOKEN are read at request time (runtime env), never at build time.

export type Task = {
  id: number;
  title: string;
  done: boolean;
  created_at: string;
};

export function backendUrl(): string {
  return (process.env.BACKEND_URL || "http://localhost:8000").replace(/\/+$/, "");
}

export function authHeaders(): Record<string, string> {
  const token = process.env.BACKEND_TOKEN?.trim();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

export async function fetchTasks(): Promise<Task[]> {
  const res = await fetch(`${backendUrl()}/api/tasks`, {
    cache: "no-store",
    signal: AbortSignal.timeout(5000),
  });
  if (!res.ok) {
    throw new Error(`backend answered ${res.status}`);
  }
  return (await res.json()) as Task[];
}
