import { addTask, toggleTask } from "./actions";
import { ApiLink } from "./api-link";
import { fetchTasks, type Task } from "./backend";

// Render on every request: tasks come from the backend at request time.
export const dynamic = "force-dynamic";

type Props = { searchParams: Promise<{ error?: string | string[] }> };

export default async function Home({ searchParams }: Props) {
  const { error } = await searchParams;
  let tasks: Task[] = [];
  let loadError: string | null = null;
  try {
    tasks = await fetchTasks();
  } catch (e) {
    loadError = e instanceof Error ? e.message : String(e);
  }

  return (
    <main>
      <h1>Tasks</h1>

      <form action={addTask}>
        <input name="title" placeholder="New task" required maxLength={200} />{" "}
        <button type="submit">Add</button>
      </form>
      {error ? <p className="error">Could not save: {String(error)}</p> : null}

      {loadError ? (
        <p className="error">Backend unavailable ({loadError}).</p>
      ) : tasks.length === 0 ? (
        <p>No tasks yet.</p>
      ) : (
        <ul>
          {tasks.map((task) => (
            <li key={task.id} data-task-id={task.id}>
              <form action={toggleTask}>
                <input type="hidden" name="id" value={task.id} />
                <button type="submit" aria-label={task.done ? "Mark not done" : "Mark done"}>
                  {task.done ? "☑" : "☐"}
                </button>
              </form>
              <span className={task.done ? "done" : undefined}>{task.title}</span>
            </li>
          ))}
        </ul>
      )}

      <footer>
        <ApiLink />
      </footer>
    </main>
  );
}
