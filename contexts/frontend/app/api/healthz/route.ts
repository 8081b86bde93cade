// Liveness probe for the frontend process; does not call the backend.
export const dynamic = "force-dynamic";

export function GET(): Response {
  return Response.json({ status: "ok" });
}
