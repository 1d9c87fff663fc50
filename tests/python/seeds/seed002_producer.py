import pika
import time

def send_message(message):
    connection = pika.BlockingConnection(pika.ConnectionParameters('localhost'))
    channel = connection.channel()

    channel.queue_declare(queue='hello')

    channel.basic_publish(exchange='', routing_key='hello', body=message)
    print(f" [x] Sent {message}")
    time.sleep(1)
    connection.close()

if __name__ == '__main__':
    for i in range(10):
        send_message(f"Hello World {i}")
