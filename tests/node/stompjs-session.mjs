// The real @stomp/stompjs (7.x) against Switchboard's /stomp, as a Dirigible page uses it:
// connect, subscribe to an endpoint's reply and error queues and to a topic, publish, and
// deactivate (which waits for the RECEIPT of its DISCONNECT). Prints what happened as JSON.
//   node stompjs-session.mjs ws://127.0.0.1:PORT/stomp ENDPOINT
import { Client } from "@stomp/stompjs";
import WebSocket from "ws";

const [url, endpoint] = process.argv.slice(2);
const result = { replies: [], errors: [], topic: [] };
const waiters = [];
const settle = () => {
  for (const w of [...waiters]) if (w.done()) { waiters.splice(waiters.indexOf(w), 1); w.resolve(); }
};
const until = (done) => new Promise((resolve) => { waiters.push({ done, resolve }); settle(); });
setTimeout(() => {
  console.log(JSON.stringify({ ...result, timedOut: true }));
  process.exit(1);
}, 15000).unref();

const client = new Client({
  webSocketFactory: () => new WebSocket(url, ["v10.stomp", "v11.stomp", "v12.stomp"]),
  reconnectDelay: 0,
  onConnect: (frame) => {
    result.version = frame.headers.version;
    result.heartBeat = frame.headers["heart-beat"];
    result.protocol = client.webSocket.protocol;
    settle();
  },
  onDisconnect: (frame) => {
    result.receipt = frame.headers["receipt-id"] !== undefined;
  },
  onStompError: (frame) => {
    result.stompError = frame.headers.message;
    settle();
  },
  onWebSocketClose: (event) => {
    result.closeCode = event.code;
  },
});
client.activate();
await until(() => client.connected);
client.subscribe(`/user/queue/reply/${endpoint}`, (m) => { result.replies.push(JSON.parse(m.body)); settle(); });
client.subscribe(`/user/queue/errors/${endpoint}`, (m) => { result.errors.push(m.body); settle(); });
client.subscribe("/topic/news", (m) => { result.topic.push(m.body); settle(); });
client.publish({ destination: `/ws/stomp/${endpoint}`, body: JSON.stringify({ from: "Node user", text: "from stompjs" }) });
await until(() => result.replies.length === 1);
client.publish({ destination: `/ws/stomp/${endpoint}`, body: "this is not JSON" });
await until(() => result.errors.length === 1);
client.publish({ destination: "/topic/news", body: "news for everyone" });
await until(() => result.topic.length === 1);
await client.deactivate();
result.deactivated = true;
console.log(JSON.stringify(result));
process.exit(0);
