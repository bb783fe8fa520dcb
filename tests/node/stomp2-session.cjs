// stomp.js 2.3.3 (the library of Dirigible pages before December 2025) against Switchboard, over
// the real sockjs-client (`sockjs`) or over a plain WebSocket (`ws`): connect, subscribe to an
// endpoint's replies, send a short message and one of 40,000 characters (stomp.js splits what it
// sends into 16 KiB WebSocket messages), disconnect. Prints what happened as JSON.
//   node stomp2-session.cjs http://127.0.0.1:PORT ENDPOINT sockjs|ws
const { Stomp } = require("stompjs/lib/stomp.js");
const SockJS = require("sockjs-client");
const WebSocket = require("ws");

const [base, endpoint, transport] = process.argv.slice(2);
const result = { transport, replies: [] };
setTimeout(() => {
  console.log(JSON.stringify({ ...result, timedOut: true }));
  process.exit(1);
}, 15000).unref();

const socket = transport === "sockjs"
  ? new SockJS(`${base}/stomp`)
  : new WebSocket(`${base.replace(/^http/, "ws")}/stomp`, ["v10.stomp", "v11.stomp"]);
const client = Stomp.over(socket);
client.debug = null;
const long = "x".repeat(40000);
client.connect({}, (frame) => {
  result.version = frame.headers.version;
  client.subscribe(`/user/queue/reply/${endpoint}`, (message) => {
    const reply = JSON.parse(message.body);
    result.replies.push({ from: reply.from, text: reply.text.length > 100 ? `${reply.text.length} characters` : reply.text, time: reply.time });
    if (result.replies.length === 2) {
      client.disconnect(() => {
        result.disconnected = true;
        console.log(JSON.stringify(result));
        process.exit(0);
      });
    }
  });
  client.send(`/ws/stomp/${endpoint}`, {}, JSON.stringify({ from: "old page", text: "hi" }));
  client.send(`/ws/stomp/${endpoint}`, {}, JSON.stringify({ from: "old page", text: long }));
}, (error) => {
  result.error = String(error && error.headers ? error.headers.message : error);
  console.log(JSON.stringify(result));
  process.exit(1);
});
