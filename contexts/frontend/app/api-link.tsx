"use client";

// NEXT_PUBLIC_* values are inlined into the bundle by `next build`:
// changing NEXT_PUBLIC_BACKEND_URL needs a rebuild, not just a restart.
const publicBackendUrl = process.env.NEXT_PUBLIC_BACKEND_URL;

export function ApiLink() {
  if (!publicBackendUrl) {
    return <span>API: (NEXT_PUBLIC_BACKEND_URL not set at build time)</span>;
  }
  return (
    <span>
      API: <a href={`${publicBackendUrl.replace(/\/+$/, "")}/api/tasks`}>{publicBackendUrl}</a>
    </span>
  );
}
