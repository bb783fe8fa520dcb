// Dirigible's decorator sample (v12), in TypeScript and without a descriptor: the @Websocket class
// declares the endpoint "order-ws" (the workspace scan reads it from every *Websocket.ts file),
// and this module's exported functions handle it. The page is /services/web/orders/.
import { Websocket, type Connection, type OnMessage } from "@aerokit/sdk/net";
import { describeOrder, parseOrder } from "./orders.ts";

@Websocket({
  name: "orders/OrderWebsocket",
  endpoint: "order-ws",
})
export class OrderWebsocket {
  private static received = 0;

  public static onOpen(conn: Connection): void {
    console.log(`${conn} opened`);
  }

  public static onMessage(message: string, from: Connection): string {
    OrderWebsocket.received++;
    console.log(`Message received: ${message}, from: ${from}`);
    const order = parseOrder(message);
    return order === null
      ? `Hello from OrderWebsocket! [${message}]`
      : describeOrder(order, OrderWebsocket.received);
  }

  public static onError(error: string): void {
    console.error(`order-ws: ${error}`);
  }

  public static onClose(conn: Connection): void {
    console.log(`${conn} closed`);
  }
}

export function onOpen(conn: Connection): void {
  OrderWebsocket.onOpen(conn);
}

// Typed with the API's handler type, so the editor checks the signature.
export const onMessage: OnMessage = (message, from) =>
  typeof message === "string"
    ? OrderWebsocket.onMessage(message, from)
    : "orders are text: JSON such as {\"item\": \"tea\", \"quantity\": 2}";

export function onError(error: string): void {
  OrderWebsocket.onError(error);
}

export function onClose(conn: Connection): void {
  OrderWebsocket.onClose(conn);
}
