// Orders as the page sends them: JSON text, checked before use.

export enum Priority {
  Normal = "normal",
  Rush = "rush",
}

export interface Order {
  item: string;
  quantity: number;
  priority: Priority;
}

/** The order in `text`, or null when the text is not an order (a plain greeting, say). */
export function parseOrder(text: string): Order | null {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof value !== "object" || value === null) return null;
  const { item, quantity, priority } = value as Partial<Record<keyof Order, unknown>>;
  if (typeof item !== "string" || item.trim() === "") return null;
  if (typeof quantity !== "number" || !Number.isInteger(quantity) || quantity < 1) return null;
  return {
    item: item.trim(),
    quantity,
    priority: priority === Priority.Rush ? Priority.Rush : Priority.Normal,
  };
}

export function describeOrder(order: Order, number: number): string {
  const rush = order.priority === Priority.Rush ? " (rush)" : "";
  return `order #${number}: ${order.quantity} x ${order.item}${rush}`;
}
